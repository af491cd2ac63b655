"""Tokenizers on HF `tokenizers`: lmlab's own, and a Hugging Face checkpoint's own, behind one API.

lmlab's own kinds are stored in the same `tokenizer.json` format, so every checkpoint carries its
tokenizer and can be loaded by `tokenizers` or `transformers` anywhere:

- `bpe`: byte-level BPE (GPT-2 style) trained on the corpus; any Unicode text round-trips.
- `byte`: the 256 byte symbols and nothing else (a BPE with no merges).
- `char`: one token per character seen in the corpus, with byte fallback (`<0x..>` tokens) for
  unseen characters, so it also round-trips any text; for tiny experiments such as tinyshakespeare.

Their chat special tokens are reserved from the start with fixed ids 0..5 in every kind, and
lmlab's chat template places them: <|bos|>, then per message <|role|> content <|end|>. A `tool`
message (a tool's result) is a user turn whose text starts with the header `[tool]\\n`: the six
tokens stay the whole chat vocabulary, so every tokenizer.json written before tool turns existed
still loads and renders them. A tool result is untrusted input, as a user's text is, so it gets
the user's token; at the token level the header is text a user could also type.

A checkpoint imported from Hugging Face keeps its own tokenizer: its vocabulary and special tokens
(nothing reserved at ids 0..5), and its Jinja chat template, rendered as `transformers` renders it
(`apply_chat_template`). `bos_id`, `end_id` and `pad_id` then come from the checkpoint: the end of
a turn is the first special token the template writes after an assistant's text, BOS falls back to
the end-of-text token when the tokenizer has none (the document separator of GPT-2/Qwen-style
pretraining), pad falls back to EOS. The tokenizer_config.json that describes it is stored beside
the run's tokenizer.json (`tokenizer_config.json`).

Special-token text, one rule for both sides of an export:
- `encode` (corpora, replies, anything lmlab tokenizes as data) never produces a control token: a
  corpus that contains "<|end|>" is encoded as text.
- `encode_prompt` (a plain prompt a user typed: `lmlab generate`, /v1/completions) reads special
  tokens written in the text and adds BOS as the tokenizer's post-processor does: exactly the
  ids of `AutoTokenizer.from_pretrained(export)(text)`.
- `encode_chat` writes control tokens only where the template puts them; a message's text is
  text, even "<|user|>" (no message can forge a turn). In `transformers` that is
  `apply_chat_template(..., sanitize_control_tokens=True)`; its default re-reads control tokens
  typed inside messages, so the two differ only on messages that contain them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

PAD, BOS, SYSTEM, USER, ASSISTANT, END = (
    "<|pad|>",
    "<|bos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
SPECIAL_TOKENS = [PAD, BOS, SYSTEM, USER, ASSISTANT, END]
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": USER}
"""Each chat role of lmlab's template and the special token that opens its turn."""
HEADERS = {"tool": "[tool]\n"}
"""Text that opens a turn after its token, for roles that share another role's token."""


def _lmlab_chat_template() -> str:
    """The Jinja twin of `Tokenizer.encode_chat` (lmlab's format) for an export: the same text,
    an error on any other role, and `{% generation %}` marks around what the assistant writes
    (its text and <|end|>, the tokens SFT trains on), which `apply_chat_template(...,
    return_assistant_tokens_mask=True)` and TRL's assistant-only loss read."""
    branches = []
    for role, token in ROLES.items():
        body = "{{ m['content'] }}" + END
        if role == "assistant":
            body = "{% generation %}" + body + "{% endgeneration %}"
        branches.append(f"m['role'] == '{role}' %}}{token}{HEADERS.get(role, '')}{body}")
    expected = ", ".join(ROLES)
    unknown = f"raise_exception('unknown chat role ' ~ m['role'] ~ '; expected {expected}')"
    return (
        BOS
        + "{% for m in messages %}{% if "
        + "{% elif ".join(branches)
        + "{% else %}{{ "
        + unknown
        + " }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
        + ASSISTANT
        + "{% endif %}"
    )


CHAT_TEMPLATE = _lmlab_chat_template()
CONFIG_SUFFIX = "_config.json"
"""A foreign tokenizer X.json keeps its tokenizer_config beside it as X_config.json (so
tokenizer.json -> tokenizer_config.json, HF's own name)."""
_NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token")


class Message(TypedDict):
    role: str
    content: str


# --- Jinja, as transformers renders chat templates -------------------------------------------


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}`: HF's marks around assistant-written text,
    rendered as their body (lmlab finds assistant spans by rendering prefixes instead)."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' override: jinja's own tojson escapes HTML characters.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """A chat template compiled in the environment `transformers` uses (a sandbox with
    trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, `tojson`)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"the chat template does not compile: {e}") from None


def _token_text(value: Any) -> str | None:
    """A special token named in a tokenizer_config: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _bos_processor(bos: str, bos_id: int) -> Any:
    """The post-processor `transformers` builds for add_bos_token=True (BOS before each text)."""
    return processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
    )


Span = tuple[int, int]


def _encode_offsets(hf: HFTokenizer, text: str, first: bool) -> tuple[list[int], list[Span]]:
    """Ids and character spans of `text`'s tokens, without BOS/EOS. A piece inside a chat (`first`
    False) is encoded after a newline that is then dropped, as transformers does, so that a
    SentencePiece tokenizer does not add the prefix space it adds at the start of a string."""
    if not first:
        nl = hf.encode("\n", add_special_tokens=False).ids
        enc = hf.encode("\n" + text, add_special_tokens=False)
        if enc.ids[: len(nl)] == nl:
            return enc.ids[len(nl) :], [(s - 1, e - 1) for s, e in enc.offsets[len(nl) :]]
    enc = hf.encode(text, add_special_tokens=False)
    return enc.ids, list(enc.offsets)


# Control tokens typed inside a message are wrapped in these private-use characters before the
# template runs, and encoded as text afterwards (transformers' `mark_control_tokens`).
_MARK_START, _MARK_END = "\U000f0000", "\U000f0001"


class JinjaChat:
    """A checkpoint's own chat template: rendered as `transformers` renders it, tokenized with
    control tokens read only where the template wrote them."""

    def __init__(self, source: str, named: dict[str, str], hf: HFTokenizer, text_hf: HFTokenizer):
        self.template = compile_template(source)
        self.named = named  # bos_token, eos_token, ... as the template sees them
        self.hf, self.text_hf = hf, text_hf
        added = hf.get_added_tokens_decoder().values()
        control = sorted(
            (t.content for t in added if t.special or (t.content in source and t.content.strip())),
            key=len,
            reverse=True,  # a token before the tokens it contains
        )
        self._control = re.compile("|".join(map(re.escape, control)) or "(?!)")
        start, end = _MARK_START, _MARK_END
        self._marked = re.compile(f"{start}({self._control.pattern}){end}|[{start}{end}]")
        self.end_text = self._end_of_turn()

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        try:
            return self.template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.named,
            )
        except jinja2.TemplateError as e:
            raise ValueError(f"the chat template refused the conversation: {e}") from None

    def _end_of_turn(self) -> str | None:
        """The first control token the template writes after an assistant's text (ChatML's
        <|im_end|>, Llama 3's <|eot_id|>), or None when it writes none or cannot tell."""
        probe = "lmlab-probe-reply"
        chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]
        try:
            text = self.render(chat, False)
        except ValueError:
            return None
        if probe not in text:
            return None
        m = self._control.search(text, text.rindex(probe) + len(probe))
        return m.group(0) if m else None

    def mark(self, messages: list[Message]) -> list[dict[str, Any]]:
        """Messages with every control token in their strings wrapped in the private markers."""

        def mark(s: str) -> str:
            s = s.replace(_MARK_START, "").replace(_MARK_END, "")
            return self._control.sub(f"{_MARK_START}\\g<0>{_MARK_END}", s)

        return [{k: mark(v) if isinstance(v, str) else v for k, v in m.items()} for m in messages]

    def spans(self, marked: list[dict[str, Any]], text: str) -> list[Span]:
        """Character spans of `text` (the rendered conversation) that each assistant wrote: its
        text and the end-of-turn token, found by rendering the conversation up to the turn with
        and without it (templates render a conversation as a prefix of its continuation)."""
        spans = []
        for i, m in enumerate(marked):
            if m.get("role") != "assistant":
                continue
            before = self.render(marked[:i], True)
            upto = self.render(marked[: i + 1], False)
            if not (upto.startswith(before) and text.startswith(upto)):
                raise ValueError(
                    f"the chat template does not render message {i} as a continuation of the "
                    "messages before it, so its assistant tokens cannot be found"
                )
            end = len(upto)
            if self.end_text and (k := upto.rfind(self.end_text, len(before))) >= 0:
                end = k + len(self.end_text)  # what follows the end of turn is the template's
            spans.append((len(before), end))
        return spans

    def encode(self, text: str) -> tuple[list[int], list[Span]]:
        """Ids and character spans of a rendered chat's tokens: marked tokens as text, the rest
        with the control tokens the template wrote (transformers' `encode_marked_chat`)."""
        ids: list[int] = []
        offsets: list[Span] = []
        pos = 0
        pieces: list[tuple[int, str, bool]] = []
        for m in self._marked.finditer(text):
            pieces.append((pos, text[pos : m.start()], False))
            if m.group(1):
                pieces.append((m.start(1), m.group(1), True))
            pos = m.end()
        pieces.append((pos, text[pos:], False))
        for n, (at, piece, as_text) in enumerate(pieces):
            if not piece:
                continue
            got, offs = _encode_offsets(self.text_hf if as_text else self.hf, piece, n == 0)
            ids += got
            offsets += [(at + s, at + e) for s, e in offs]
        return ids, offsets


# --- the tokenizer ---------------------------------------------------------------------------


def reserves_lmlab_tokens(hf: HFTokenizer) -> bool:
    """Whether `hf` is one of lmlab's own (its six chat tokens at ids 0..5)."""
    return all(hf.token_to_id(t) == i for i, t in enumerate(SPECIAL_TOKENS))


class Tokenizer:
    """A typed wrapper over a `tokenizers.Tokenizer`: text, plain prompts and chats to ids.

    With `config` None it is one of lmlab's own (the six chat tokens at ids 0..5, lmlab's chat
    template); with `config` (a Hugging Face tokenizer_config: its named special tokens and
    chat_template) it is a checkpoint's own, with its template and special ids.
    """

    pad_id: int
    """Padding (a foreign tokenizer without a pad token pads with EOS)."""
    bos_id: int
    """The document start: BOS, or EOS where the tokenizer has no BOS (Qwen2)."""
    end_id: int
    """The token that ends an assistant turn (<|end|>; ChatML's <|im_end|>, ...)."""
    stop_ids: frozenset[int]
    """What ends a generation: the end of turn and EOS."""
    special_ids: tuple[int, ...]
    """Every special token (never sampled as text)."""
    system_id: int
    user_id: int
    assistant_id: int
    """The role tokens (lmlab's own tokenizers only)."""

    def __init__(self, hf: HFTokenizer, config: dict[str, Any] | None = None) -> None:
        hf.encode_special_tokens = True  # `encode`: text never turns into control tokens
        self.hf = hf
        self.config = config
        # `encode_prompt` reads special tokens typed in the text and post-processes (adds BOS)
        self.prompt_hf = HFTokenizer.from_str(hf.to_str())
        self.prompt_hf.encode_special_tokens = False
        self.chat: JinjaChat | None = None
        if config is None:
            for i, tok in enumerate(SPECIAL_TOKENS):
                if hf.token_to_id(tok) != i:
                    raise ValueError(
                        f"tokenizer does not reserve {tok} at id {i} and comes without the "
                        "tokenizer_config.json of a Hugging Face checkpoint"
                    )
            ids = range(len(SPECIAL_TOKENS))
            self.pad_id, self.bos_id, self.system_id, self.user_id, self.assistant_id = ids[:5]
            self.end_id = ids[5]
            self.stop_ids = frozenset({self.end_id})
            self.special_ids = tuple(ids)
            self.prompt_hf.post_processor = _bos_processor(BOS, self.bos_id)
            return
        self._init_foreign(config)

    def _init_foreign(self, config: dict[str, Any]) -> None:
        named = {k: t for k in _NAMED_TOKENS if (t := _token_text(config.get(k)))}
        ids: dict[str, int] = {}
        for key, text in named.items():
            i = self.hf.token_to_id(text)
            if i is None:
                raise ValueError(f"the tokenizer's {key} {text!r} is not in its vocabulary")
            ids[key] = i
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: HF uses "default" without tools
            by_name = {t.get("name"): t.get("template") for t in template}
            template = by_name.get("default", next(iter(by_name.values()), None))
        if template is not None and not isinstance(template, str):
            raise ValueError("the tokenizer's chat_template is not a string")
        if template:
            self.chat = JinjaChat(template, named, self.prompt_hf, self.hf)
        end = self.chat.end_text if self.chat else None
        end_id = self.hf.token_to_id(end) if end else ids.get("eos_token")
        if end_id is None:
            raise ValueError(
                "the tokenizer has neither an eos_token nor a chat template that ends assistant "
                "turns with a special token: cannot tell where a reply ends"
            )
        eos_id = ids.get("eos_token", end_id)
        self.end_id = end_id
        self.bos_id = ids.get("bos_token", eos_id)
        self.pad_id = ids.get("pad_token", eos_id)
        self.stop_ids = frozenset({end_id, eos_id})
        decoder = self.hf.get_added_tokens_decoder()
        self.special_ids = tuple(sorted(i for i, t in decoder.items() if t.special))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as data: special tokens written in it stay text."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts in parallel (the Rust side uses every core)."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a plain prompt as `transformers` encodes it: special tokens written in
        the text are read, and BOS is added where the tokenizer adds it: always for lmlab's;
        for a checkpoint's, as its tokenizer.json's post-processor says (Llama 3 adds one,
        Qwen2 none; transformers ignores the config's add_bos_token beside a tokenizer.json)."""
        return self.prompt_hf.encode(text).ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json to `path` (and a foreign tokenizer's config beside it)."""
        path = Path(path)
        self.hf.save(str(path))
        if self.config is not None:
            sidecar = path.with_name(path.stem + CONFIG_SUFFIX)
            sidecar.write_text(json.dumps(self.config, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """The tokenizer saved at `path` by `save` (ValueError, one line, if it is not one)."""
        path = Path(path)
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises bare Exceptions for malformed files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"cannot load tokenizer {path}: {first}") from None
        sidecar = path.with_name(path.stem + CONFIG_SUFFIX)
        try:
            if reserves_lmlab_tokens(hf) or not sidecar.is_file():
                return cls(hf)
            return cls(hf, json.loads(sidecar.read_text()))
        except (ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot use tokenizer {path}: {e}") from None

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Tokenizer:
        """The tokenizer of a Hugging Face folder (tokenizer.json, tokenizer_config.json,
        chat_template.jinja, special_tokens_map.json). One that reserves lmlab's six tokens at
        ids 0..5 is lmlab's own and keeps lmlab's template (an export renders the same ids)."""
        folder = Path(folder)
        hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        if reserves_lmlab_tokens(hf):
            return cls(hf)
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                config |= json.loads((folder / name).read_text())
        if (folder / "chat_template.json").is_file():
            config["chat_template"] = json.loads((folder / "chat_template.json").read_text()).get(
                "chat_template"
            )
        if (folder / "chat_template.jinja").is_file():
            config["chat_template"] = (folder / "chat_template.jinja").read_text()
        config.pop("added_tokens_decoder", None)  # tokenizer.json holds the added tokens
        return cls(hf, config)

    def save_pretrained(self, folder: Path, model_max_length: int) -> None:
        """tokenizer.json and tokenizer_config.json for `transformers` in `folder`: lmlab's own
        with a BOS post-processor and the Jinja twin of `encode_chat`; a foreign one as it came."""
        if self.config is not None:
            self.hf.save(str(folder / "tokenizer.json"))
            config = dict(self.config)
        else:
            self.prompt_hf.save(str(folder / "tokenizer.json"))
            config = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": END,
                "pad_token": PAD,
                "add_bos_token": True,
                "add_eos_token": False,
                "chat_template": CHAT_TEMPLATE,
            }
        config["model_max_length"] = model_max_length
        text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        (folder / "tokenizer_config.json").write_text(text)

    def encode_chat(
        self, messages: list[Message], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of a conversation and a mask that is True on assistant-written tokens.

        lmlab's template: <|bos|> then per message <|role|> content <|end|> (a tool message is
        a user turn that starts with "[tool]\\n"); with `add_generation_prompt` it ends with
        <|assistant|> for the model to continue. The mask covers each assistant reply and its
        closing <|end|> (what SFT trains on), not the role token that the template supplies.
        A foreign tokenizer renders its own template; the mask covers each assistant's text and
        the end-of-turn token after it.
        """
        if self.config is not None:
            return self._encode_foreign_chat(messages, add_generation_prompt)
        ids, mask = [self.bos_id], [False]
        for m in messages:
            role = m["role"]
            if role not in ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected one of {', '.join(ROLES)}")
            body = [*self.encode(HEADERS.get(role, "") + m["content"]), self.end_id]
            ids.append(self.hf.token_to_id(ROLES[role]))
            mask.append(False)
            ids.extend(body)
            mask.extend([role == "assistant"] * len(body))
        if add_generation_prompt:
            ids.append(self.assistant_id)
            mask.append(False)
        return ids, mask

    def _encode_foreign_chat(
        self, messages: list[Message], add_generation_prompt: bool
    ) -> tuple[list[int], list[bool]]:
        if self.chat is None:
            raise ValueError(
                "this checkpoint's tokenizer has no chat template (chat_template in "
                "tokenizer_config.json or chat_template.jinja); chats need one"
            )
        marked = self.chat.mark(messages)
        text = self.chat.render(marked, add_generation_prompt)
        spans = self.chat.spans(marked, text)
        ids, offsets = self.chat.encode(text)
        # a token is the assistant's when it overlaps one of its spans (as transformers'
        # return_assistant_tokens_mask decides)
        mask = [any(s < b and a < t for a, b in spans) for s, t in offsets]
        return ids, mask


def min_vocab_size(kind: str) -> int:
    """Smallest vocabulary a tokenizer kind can have (special tokens plus the byte alphabet)."""
    return len(SPECIAL_TOKENS) + 256 + (1 if kind == "bpe" else 0)


def train_bpe(texts: Iterable[str], vocab_size: int, show_progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE tokenizer with `vocab_size` tokens (specials included)."""
    if vocab_size < min_vocab_size("bpe"):
        raise ValueError(
            f"vocab size {vocab_size} is too small: byte-level BPE needs at least "
            f"{min_vocab_size('bpe')} (6 special tokens + 256 bytes + 1 merge)"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf)


def byte_tokenizer() -> Tokenizer:
    """The 256 byte symbols as tokens (byte-level BPE with no merges)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + alphabet)}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.add_special_tokens(SPECIAL_TOKENS)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return Tokenizer(hf)


def char_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """One token per character seen in `texts`, with UTF-8 byte fallback for unseen ones."""
    chars: set[str] = set()
    for t in texts:
        chars.update(t)
    fallback = [f"<0x{b:02X}>" for b in range(256)]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + fallback + sorted(chars))}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    hf.add_special_tokens(SPECIAL_TOKENS)
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return Tokenizer(hf)


def build_tokenizer(kind: str, texts: Iterator[str] | list[str], vocab_size: int) -> Tokenizer:
    """Build a tokenizer from its `--tokenizer` spec: char, byte, bpe or a tokenizer.json path."""
    if kind == "bpe":
        return train_bpe(texts, vocab_size)
    if kind == "byte":
        return byte_tokenizer()
    if kind == "char":
        return char_tokenizer(texts)
    path = Path(kind)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"tokenizer {kind!r} is neither char, byte, bpe nor a tokenizer.json file")
    return Tokenizer.load(path)
