"""Model cards: markdown with YAML front matter (license, base_model, tags, description).

Front matter is read with yaml.safe_load (no object construction). A license, base model or description given
both in the card and in the form must agree; either may be left out; tags add up.

The card that peft's `save_pretrained` writes names the base model by the local directory it was loaded from
(`base_model: /home/me/models/base`) and tags it `base_model:adapter:<that path>`: such a path names no model
here, so it is kept aside as `base_model_path` (the upload maps it to a registered base model whose shapes the
adapter matches) and the Hub's derived `base_model:*` tags are dropped."""
from __future__ import annotations

import re

import yaml

from domain.errors import DomainError

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(?P<yaml>.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
MAX_CARD_CHARS = 100_000
CARD_FIELDS = ("license", "base_model", "tags", "description")
LOCAL_PATH = re.compile(r"^(/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\])")


def is_local_path(name: str) -> bool:
    """A directory on someone's machine (absolute, home-relative or ./ ../), not a model's name or Hub id."""
    return bool(LOCAL_PATH.match(name or ""))


class ModelCardError(DomainError):
    code = "invalid_model_card"

    def __init__(self, message: str):
        super().__init__(message, param="model_card")


def parse_model_card(text: str) -> dict:
    """The front matter as a dict of the known fields (tags as a list of lowercase strings)."""
    if len(text) > MAX_CARD_CHARS:
        raise ModelCardError(f"The model card is too long ({len(text)} characters, at most {MAX_CARD_CHARS}).")
    match = FRONT_MATTER.match(text or "")
    if not match:
        return {}
    try:
        data = yaml.safe_load(match["yaml"])
    except yaml.YAMLError as error:
        raise ModelCardError(f"The model card's front matter is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelCardError("The model card's front matter must be a YAML mapping (key: value lines).")
    metadata = {}
    for key in ("license", "base_model", "description"):
        if key in data and data[key] is not None:
            if not isinstance(data[key], (str, int, float)):
                raise ModelCardError(f"The model card's {key} must be a single value.")
            metadata[key] = str(data[key]).strip()
    if data.get("tags") is not None:
        tags = data["tags"]
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(tag, (str, int)) for tag in tags):
            raise ModelCardError("The model card's tags must be a list of words.")
        metadata["tags"] = sorted({str(tag).strip().lower() for tag in tags
                                   if str(tag).strip() and not str(tag).strip().lower().startswith("base_model:")})
    if is_local_path(metadata.get("base_model", "")):
        metadata["base_model_path"] = metadata.pop("base_model")
    return metadata


def reconcile(card: dict, form: dict) -> dict:
    """Merge card metadata with form fields; a field given in both must agree.

    `form` holds the same keys (license, base_model, tags, description), missing or empty when not given."""
    merged = {}
    for key in CARD_FIELDS:
        from_card, from_form = card.get(key), form.get(key)
        if key == "tags":
            merged["tags"] = sorted({str(t).strip().lower() for t in (from_form or [])} | set(from_card or []))
            continue
        if from_card and from_form and _comparable(key, from_card) != _comparable(key, from_form):
            raise ModelCardError(
                f"The model card says {key} {from_card!r} but the form says {from_form!r}; make them agree."
            )
        merged[key] = from_form or from_card or ([] if key == "tags" else "")
    return merged


def _comparable(key: str, value):
    """SPDX ids are case-insensitive (Hugging Face cards write `apache-2.0`)."""
    return value.casefold() if key == "license" else value


def model_card_html(text: str) -> str:
    """The card's markdown body (front matter left out) as HTML, sanitised by nh3 (Ammonia's allow-list: no
    script, no event handlers, no javascript: links); links get rel="noopener noreferrer"."""
    import markdown
    import nh3

    body = FRONT_MATTER.sub("", text or "", count=1)
    html = markdown.markdown(body, extensions=["tables", "fenced_code"], output_format="html")
    return nh3.clean(html, link_rel="noopener noreferrer nofollow")
