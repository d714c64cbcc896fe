"""`general.*` metadata derived as gguf-py's `metadata.py` derives it, and llama.cpp's file naming.

The name comes from the model card, then `_name_or_path` in config.json, then the folder name
(`tiny-llama` -> "Tiny Llama"); the size label from a size in the name when it is plausible, else
from the parameter count (`3.2M`, `4x1.6M` for experts). Sampling defaults come from
generation_config.json.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from .kv import KVStore

logger = logging.getLogger(__name__)
G = gguf.Keys.General


def id_to_title(s: str) -> str:
    """'tiny-qwen3moe' -> 'Tiny Qwen3Moe': title-case lowercase words, keep versions and acronyms."""
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w) else w
                    for w in s.strip().replace("-", " ").split())


def weight_count_label(n: int, min_digits: int = 2) -> str:
    """gguf-py's `model_weight_count_rounded_notation`: 3_200_000 -> '3.2M'."""
    for limit, scale, suffix in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if n > limit:
            break
    else:
        scale, suffix = 1e-3, "K"
    scaled = n * scale
    fix = max(min_digits - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{fix}f}{suffix}"


def size_label(total: int, shared: int, expert: int, n_expert: int) -> str:
    if n_expert > 0:
        return f"{n_expert}x{weight_count_label(abs(shared) + abs(expert))}"
    return weight_count_label(abs(total))


@dataclass
class IdParts:
    full_name: str | None = None
    org: str | None = None
    basename: str | None = None
    finetune: str | None = None
    version: str | None = None
    size_label: str | None = None


def model_id_components(model_id: str | None, total_params: int = 0) -> IdParts:
    """Split an HF model id ('org/Name-7B-Instruct-v0.2') into gguf-py's name components."""
    if model_id is None:
        return IdParts()
    if " " in model_id:
        return IdParts(full_name=model_id)
    org, full = model_id.split("/", 1) if "/" in model_id else (None, model_id)
    if org is not None and org.startswith("."):
        org = None
    parts = [p for p in full.split("-") if p]
    kinds: list[set[str]] = [set() for _ in parts]
    for i, part in enumerate(parts):
        if re.fullmatch(r"(v|iter)?\d+([.]\d+)*", part, re.IGNORECASE):
            kinds[i].add("version")
        elif re.fullmatch(r"i?q\d(_\w)*|b?fp?(16|32)", part, re.IGNORECASE):
            kinds[i].add("type")
            parts[i] = part.upper()
        elif i > 0 and re.fullmatch(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)", part,
                                    re.IGNORECASE):
            part = part.replace("_", ".")
            if part[-1].isdecimal():  # bloom-7b1 -> 7.1b
                part = part[:-2] + "." + part[-1] + part[-2]
            if len(part) > 1 and part[-2].isdecimal() and part[-1] in "kmbt":
                part = part[:-1] + part[-1].upper()
            if total_params != 0:
                try:
                    label = float(part[:-1]) * pow(1000, " KMBT".find(part[-1]))
                    if (total_params < 0 and label < abs(total_params) // 8) or (
                            total_params > 0 and abs(label - total_params) > 7 * total_params // 8):
                        kinds[i].add("finetune")  # likely a context length
                        part = part[:-1] + part[-1].lower()
                except ValueError:
                    pass
            if not kinds[i]:
                kinds[i].add("size_label")
            parts[i] = part
        elif i > 0 and re.fullmatch(r"chat|instruct|vision|lora", part, re.IGNORECASE):
            kinds[i].add("type" if total_params < 0 and part.lower() == "lora" else "finetune")
    if any(c.isdecimal() for n, t in zip(parts, kinds) if "size_label" in t for c in n):
        for n, t in zip(parts, kinds):
            if "size_label" in t and all(c.isalpha() for c in n):
                t.remove("size_label")
    at_start = True
    for part, t in zip(parts, kinds):
        if at_start and ((not t and part[0].isalpha()) or "version" in t):
            t.add("basename")
        else:
            at_start = False
            if not t:
                t.add("finetune")
    for t in reversed(kinds):
        if "basename" in t and len(t) > 1:
            t.remove("basename")
        else:
            break
    basename = "-".join(n for n, t in zip(parts, kinds) if "basename" in t) or None
    size = "-".join(dict.fromkeys(s for s, t in zip(parts, kinds) if "size_label" in t)) or None
    finetune = "-".join(f for f, t in zip(parts, kinds) if "finetune" in t) or None
    version = "-".join(v for v, t in zip(parts, kinds) if "version" in t and "basename" not in t) or None
    if size is None and finetune is None and version is None:
        basename = None
    return IdParts(full, org, basename, finetune, version, size)


def _model_card(hf_dir: Path) -> dict[str, Any]:
    """The YAML front matter of README.md, or {}."""
    path = hf_dir / "README.md"
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0] != "---":
        return {}
    body = []
    for line in lines[1:]:
        if line == "---":
            break
        body.append(line)
    text = ("\n".join(body) + "\n").replace("- no\n", '- "no"\n').replace("\t", "  ")
    try:
        import yaml
        data = yaml.safe_load(text)
    except Exception as e:  # a broken model card must not stop a conversion
        logger.warning("%s: model card front matter unreadable (%s)", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def _sampling_ok(gkey: str, v: Any) -> bool:
    """A generation_config.json value llama.cpp's writer can store under `gkey`."""
    if gkey == G.SAMPLING_SEQUENCE:
        return isinstance(v, str)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= 3.4028234663852886e38:
        return False
    return gkey not in _INT_SAMPLING or (float(v).is_integer() and -(1 << 31) <= v < 1 << 31)


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


# generation_config.json key -> general.sampling.* key (first present wins)
_SAMPLING: list[tuple[tuple[str, ...], str]] = [
    (("sequence",), G.SAMPLING_SEQUENCE), (("top_k",), G.SAMPLING_TOP_K), (("top_p",), G.SAMPLING_TOP_P),
    (("min_p",), G.SAMPLING_MIN_P), (("xtc_probability",), G.SAMPLING_XTC_PROBABILITY),
    (("xtc_threshold",), G.SAMPLING_XTC_THRESHOLD), (("temperature",), G.SAMPLING_TEMP),
    (("penalty_last_n",), G.SAMPLING_PENALTY_LAST_N),
    (("penalty_repeat", "repetition_penalty"), G.SAMPLING_PENALTY_REPEAT),
    (("mirostat",), G.SAMPLING_MIROSTAT), (("mirostat_tau",), G.SAMPLING_MIROSTAT_TAU),
    (("mirostat_eta",), G.SAMPLING_MIROSTAT_ETA),
]
_INT_SAMPLING = {G.SAMPLING_TOP_K, G.SAMPLING_PENALTY_LAST_N, G.SAMPLING_MIROSTAT}


@dataclass
class ModelMetadata:
    name: str | None = None
    author: str | None = None
    version: str | None = None
    organization: str | None = None
    finetune: str | None = None
    basename: str | None = None
    description: str | None = None
    size_label: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    tags: list[str] | None = None
    languages: list[str] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def apply_id(self, ids: IdParts) -> None:
        if self.name is None and ids.full_name is not None:
            self.name = id_to_title(ids.full_name)
        if self.organization is None and ids.org is not None:
            self.organization = id_to_title(ids.org)
        for attr in ("basename", "finetune", "version", "size_label"):
            if getattr(self, attr) is None and getattr(ids, attr) is not None:
                setattr(self, attr, getattr(ids, attr))

    def write(self, kv: KVStore) -> None:
        """general.* in gguf-py's `set_gguf_meta_model` order."""
        for key, value in self.sampling.items():
            if key == G.SAMPLING_SEQUENCE:
                kv.str(key, value)
            elif key in _INT_SAMPLING:
                kv.i32(key, int(value))
            else:
                kv.f32(key, value)
        kv.str(G.NAME, self.name or "")
        for key, attr in ((G.AUTHOR, "author"), (G.VERSION, "version"), (G.ORGANIZATION, "organization"),
                          (G.FINETUNE, "finetune"), (G.BASENAME, "basename"), (G.DESCRIPTION, "description"),
                          (G.SIZE_LABEL, "size_label")):
            if getattr(self, attr) is not None:
                kv.str(key, getattr(self, attr))
        if self.license is not None:
            kv.str(G.LICENSE, ",".join(self.license) if isinstance(self.license, list) else self.license)
        if self.license_name is not None:
            kv.str(G.LICENSE_NAME, self.license_name)
        if self.license_link is not None:
            kv.str(G.LICENSE_LINK, self.license_link)
        if self.tags is not None:
            kv.strs(G.TAGS, self.tags)
        if self.languages is not None:
            kv.strs(G.LANGUAGES, self.languages)


def load_metadata(hf_dir: Path, total_params: int, shared: int, expert: int, n_expert: int,
                  model_name: str | None = None) -> ModelMetadata:
    """Metadata from the model card, config.json's `_name_or_path`, the folder name and the
    parameter counts, in gguf-py's order of precedence."""
    md = ModelMetadata()
    card = _model_card(hf_dir)
    for attr, keys in (("name", ("name", "model_name")), ("author", ("author", "model_author", "model_creator")),
                       ("version", ("version", "model_version")),
                       ("organization", ("organization", "model_organization")),
                       ("description", ("description", "model_description")),
                       ("finetune", ("finetune", "model_finetune")),
                       ("basename", ("basename", "model_basename", "model_type")),
                       ("size_label", ("size_label", "model_size_label")),
                       ("license", ("license",)), ("license_name", ("license_name",)),
                       ("license_link", ("license_link",))):
        for k in keys:
            v = card.get(k)
            if attr == "license" and isinstance(v, list):
                v = [str(x) for x in v if isinstance(x, (str, int, float))] or None
            elif v is not None and not isinstance(v, str):
                v = str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
            if getattr(md, attr) is None and v is not None:
                setattr(md, attr, v)
    for attr, keys in (("tags", ("tags", "pipeline_tag")), ("languages", ("languages", "language"))):
        for k in keys:
            v = card.get(k)
            if v is None:
                continue
            cur = getattr(md, attr) or []
            for item in (v if isinstance(v, list) else [v]):
                if not isinstance(item, str):
                    continue  # a model card's YAML can hold anything; GGUF wants strings
                if item not in cur:
                    cur.append(item)
            setattr(md, attr, cur)
    name_or_path = _json_or_empty(hf_dir / "config.json").get("_name_or_path")
    if isinstance(name_or_path, str) and name_or_path.count("/") <= 1:
        md.apply_id(model_id_components(name_or_path, total_params))
    md.apply_id(model_id_components(hf_dir.name, total_params))
    gen = _json_or_empty(hf_dir / "generation_config.json")
    for keys, gkey in _SAMPLING:
        for k in keys:
            if gen.get(k) is not None:
                if _sampling_ok(gkey, gen[k]):
                    md.sampling[gkey] = gen[k]
                else:
                    logger.warning("%s: ignoring %s = %.40r (not a %s)", hf_dir / "generation_config.json", k,
                                   gen[k], "string" if gkey == G.SAMPLING_SEQUENCE else "number in range")
                break
    if model_name is not None:
        md.name = model_name
    if md.name is None:
        md.name = hf_dir.name
    if md.size_label is None and total_params > 0:
        md.size_label = size_label(total_params, shared, expert, n_expert)
    return md


def default_file_name(md: ModelMetadata, output_type: str | None, vocab_only: bool = False) -> str:
    """llama.cpp's `naming_convention`: '<Name>-<size>-<finetune>-<version>-<TYPE>.gguf'."""
    base = md.basename if md.basename is not None else md.name
    name = base.strip().replace(" ", "-").replace("/", "-") if base is not None else "ggml-model"
    parts = [name]
    if not vocab_only and md.size_label is not None:
        parts.append(md.size_label)
    for v in (md.finetune, md.version):
        if v is not None:
            parts.append(v.strip().replace(" ", "-"))
    if vocab_only:
        parts.append("vocab")
    elif output_type is not None:
        parts.append(output_type.strip().replace(" ", "-").upper())
    return "-".join(parts) + ".gguf"
