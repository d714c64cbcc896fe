"""Chat templates rendered in jinja2's immutable sandbox."""
from __future__ import annotations

import pytest
from llmtk.errors import InputError
from llmtk.generate.chat import chat_prompt, render_chat
from llmtk.ggufio.shards import open_gguf
from llmtk.tokenizer import Tokenizer

USER = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def smollm2_kv(smollm2_path):
    with open_gguf(smollm2_path) as r:
        return dict(r.kv)


def test_smollm2_template(smollm2_kv):
    tok = Tokenizer.from_metadata(smollm2_kv)
    text = chat_prompt(smollm2_kv, tok, "Hi there")
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    with_system = chat_prompt(smollm2_kv, tok, "Hi there", system="Be brief.")
    assert with_system == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                           "<|im_start|>assistant\n")
    ids = tok.encode(text)
    assert ids[0] == tok.encode("<|im_start|>", add_special=False)[0]


def test_missing_template_is_an_input_error():
    with pytest.raises(InputError, match="no chat template"):
        chat_prompt({}, None, "x")


def test_hugging_face_helpers():
    assert render_chat("{{ messages | tojson }}", USER) == '[{"role": "user", "content": "Hi there"}]'
    assert render_chat("{% for m in messages %}{% if loop.first %}{% break %}{% endif %}{% endfor %}ok", USER) == "ok"
    with pytest.raises(InputError, match="only user turns"):
        render_chat("{{ raise_exception('only user turns') }}", USER)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.append({'role': 'x'}) }}",
    "{{ messages[0].update({'content': 'x'}) }}",
    "{{ ''.format.__self__ }}",
    "{% for i in range(10**9) %}{% endfor %}",
])
def test_sandbox_refuses_escapes(template):
    """Unsafe attributes are undefined in the sandbox: using them is refused, printing one prints
    nothing; either way no Python internals come out."""
    try:
        out = render_chat(template, USER)
    except InputError:
        return
    assert out == ""


def test_syntax_errors_are_input_errors():
    with pytest.raises(InputError, match="chat template error"):
        render_chat("{% for %}", USER)
