"""A GGUF's chat template (`tokenizer.chat_template`, Jinja) rendered in jinja2's sandbox.

Templates come with downloaded models, so they are data from strangers: they run in
`jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to dunder attributes or to the
internals of Python objects, no mutation of the messages), with the globals Hugging Face's
`apply_chat_template` offers (`raise_exception`, `strftime_now`) and its `tojson`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmtk.errors import InputError
from llmtk.ggufio.constants import Key


def chat_template(kv: Mapping[str, Any]) -> str:
    """The model's default chat template, or an InputError naming the missing key."""
    t = kv.get(Key.CHAT_TEMPLATE)
    if not isinstance(t, str) or not t.strip():
        raise InputError(f"the model has no chat template (metadata key '{Key.CHAT_TEMPLATE}'); "
                         "give the prompt already formatted, without --chat")
    return t


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_chat(template: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", **extra: Any) -> str:
    """The template's text for `messages` ([{"role": "user", "content": "..."}]); template errors
    and sandbox refusals are InputErrors."""
    import jinja2
    from jinja2.sandbox import SecurityError

    try:
        tmpl = _environment().from_string(template)
        return tmpl.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                           bos_token=bos_token, eos_token=eos_token, **extra)
    except SecurityError as e:
        raise InputError(f"chat template refused by the sandbox: {e}") from None
    except jinja2.TemplateError as e:
        raise InputError(f"chat template error: {e}") from None
    except OverflowError as e:  # the sandbox's range() limit
        raise InputError(f"chat template refused by the sandbox: {e}") from None


def chat_prompt(kv: Mapping[str, Any], tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """One user turn (after an optional system turn) rendered with the model's own template and
    its BOS/EOS texts; a leading BOS text is dropped when the tokenizer adds BOS itself (as
    llama.cpp does, so BOS is not doubled)."""
    template = chat_template(kv)

    def text(tid: int | None) -> str:
        return "" if tid is None else tokenizer.token_to_piece(tid).decode("utf-8", "replace")

    bos, eos = text(tokenizer.bos_id), text(tokenizer.eos_id)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    out = render_chat(template, messages, bos_token=bos, eos_token=eos)
    if bos and tokenizer.add_bos and out.startswith(bos):
        out = out[len(bos):]
    return out
