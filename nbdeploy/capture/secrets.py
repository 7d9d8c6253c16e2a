"""Refuse to capture credentials: keys in globals, closures, defaults, attributes, data, or the pickled bytes.

Two views, because each misses what the other sees: the named strings reachable from the object (so the error
can name the variable), and every string the pickle holds plus the text in its byte strings (numpy unicode
arrays are UTF-32 there), found by walking the pickle's opcodes rather than by regular expressions over megabytes.
Rules: detect-secrets' maintained detectors (key shapes; its keyword list judging a synthetic ``name = "value"``
line; base64 entropy) beside a few of ours for shapes it lacks. Data (numpy/pandas values, dict keys, long lists)
is judged by shape only: e-mails, ids, hex digests (data versions) and uuids (run ids) are data, not secrets,
unless a variable named like a secret holds them (some providers issue uuid or hex keys).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import pickletools
import re
import sys
import types
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import SecretFoundError


def _word(prefix: str, n: int) -> str:
    """``prefix`` (``n`` characters) starting a word; written so the regex engine can search for it fast."""
    return f"(?:{prefix})(?<!\\w.{{{n}}})"


#: Our shapes, checked before detect-secrets' (whose Stripe rule is live-only, whose OpenAI rule needs a
#: marker newer keys lack, and which has no Hugging Face, Google or bare npm rule).
PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key": re.compile(_word("AKIA|ASIA", 4) + r"[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(_word("gh[pousr]_", 4) + r"[A-Za-z0-9]{36}\b|" + _word("github_pat_", 11) + r"\w{60,}"),
    "Slack token": re.compile(_word("xox[abposr]-", 5) + r"[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(_word("sk-", 3) + r"[A-Za-z0-9_-]{20,}"),
    "Google API key": re.compile(_word("AIza", 4) + r"[0-9A-Za-z_-]{35}\b"),
    "Stripe key": re.compile(_word("[sr]k_(?:live|test)_", 8) + r"[0-9A-Za-z]{16,}"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA |PGP |ENCRYPTED )?PRIVATE KEY( BLOCK)?-----"),
    "JWT": re.compile(_word("eyJ", 3) + r"[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "Hugging Face token": re.compile(_word("hf_", 3) + r"[A-Za-z0-9]{30,}\b"),
    "npm token": re.compile(_word("npm_", 4) + r"[A-Za-z0-9]{36}\b"),
    "Databricks token": re.compile(_word("dapi", 4) + r"[0-9a-f]{32}(-\d)?\b"),
    "Google OAuth client secret": re.compile(_word("GOCSPX-", 7) + r"[A-Za-z0-9_-]{28}"),
    "Artifactory API key": re.compile(_word("AKCp", 4) + r"[A-Za-z0-9]{10,}"),
}
#: Prefixes that words share ("sk-learn-..."): the match must look random too.
_RANDOM_BODY = frozenset({"OpenAI-style key", "Hugging Face token", "Artifactory API key"})
#: detect-secrets detectors used. Left out: IPPublicDetector (addresses are data), ArtifactoryDetector
#: (matches words: 'APEXLEGENDS'; ours above asks for AKCp), HexHighEntropyString (digests are data versions),
#: BasicAuthDetector (misses 'redis://:pw@'; URLs are parsed below). Keyword and base64 rules need a name.
_VALUE_SHAPES = (
    "aws:AWSKeyDetector azure_storage_key:AzureStorageKeyDetector discord:DiscordBotTokenDetector "
    "github_token:GitHubTokenDetector gitlab_token:GitLabTokenDetector jwt:JwtTokenDetector "
    "mailchimp:MailchimpDetector npm:NpmDetector openai:OpenAIDetector private_key:PrivateKeyDetector "
    "pypi_token:PypiTokenDetector sendgrid:SendGridDetector slack:SlackDetector square_oauth:SquareOAuthDetector "
    "stripe:StripeDetector telegram_token:TelegramBotTokenDetector twilio:TwilioKeyDetector"
)
_CONTEXT_SHAPES = (  # these need the variable's name in the line: ``ibm_api_key = "..."``
    "aws:AWSKeyDetector cloudant:CloudantDetector ibm_cloud_iam:IbmCloudIamDetector "
    "ibm_cos_hmac:IbmCosHmacDetector softlayer:SoftlayerDetector"
)
#: Every shape above holds a run of 16 key characters or one of these words: cheaper to look for first.
_CANDIDATE = re.compile(r"[A-Za-z0-9_+/=-]{16,}|xox|eyJ|AKCp|PRIVATE KEY|PuTTY|_authToken")
_HEX = re.compile(r"[0-9a-f-]+|[0-9A-F-]+")  # digests and uuids: no shape is single-case hex
_SECRET_WORD = re.compile(  # whole words of a name, beside detect-secrets' keyword list
    r"pw|pwd|pass|passw|passwd|passwords?|passphrase|secrets?|tokens?|creds?|credentials?|dsn|aws|auth|"
    r"authorization|apikey|bearer|jwt|sas"
)
_SECRET_PHRASE = re.compile(
    r"(api|access|secret|private|priv|auth|client|service|account|signing|encryption|master|app|storage|db|"
    r"database|session|license|subscription)_?key"
)
_QUALIFIER = re.compile(  # a last word that makes the name about a credential, not one: aws_region, token_url
    r"region|bucket|endpoint|url|uri|host|hostname|port|path|dir|file|filename|type|kind|mode|method|field|col|"
    r"columns?|len|length|size|count|user|username|profile|header|version|expiry|expires|ttl|scope|format|provider|"
    r"name|ids?|arn|role|prefix|suffix|env|var|scheme|algorithm|strategy|backend|policy|hint|label"
)
_NAME_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_AUTH_SCHEME = re.compile(r"^(bearer|basic|token|bot)\s+", re.I)
_REGEX_LIKE = re.compile(r"\\[wdsbWDSB]|\(\?|\[[^\]]+\][*+?{]")
_PATH_PART = re.compile(r"(?:[A-Z]?[a-z]{2,}|[A-Za-z]\d+|[a-z0-9]+|[._~@-])+")  # words: home, ChurnModel, v3, 2024
_FILE_NAME = re.compile(r"[\w.-]+\.(csv|parquet|json|ya?ml|txt|pkl|joblib|onnx|pt|h5|npy|db|sqlite)")
_IDENTIFIER = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[a-z]+\d*([_.-]([a-z]+\d*|\d+))+")  # CRM_API_KEY, eu-west-1
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|arn:|urn:")  # an address, not a credential
_ASSIGNMENT = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*)=([^;&\s,'\"]+)")
_NOT_TEXT = bytes(b for b in range(256) if not (32 <= b < 127 or b in (0, 9, 10, 13)))
_ASCII_RUN = re.compile(rb"[\t\n\r\x20-\x7e]{8,}")
_SCALARS = (int, float, complex, bool, type(None), types.ModuleType, types.BuiltinFunctionType)
_MIN_LEN = 8  # no credential shape is shorter
_MAX_ITEMS = 10_000  # elements looked at per container, so a vocabulary cannot stall the traversal
_MAX_ELEMENTS = 5_000  # values looked at per array or column (the pickled view sees all of them)
_MAX_COLUMNS = 200
_MAX_STRINGS = 200_000
_MAX_TEXT = 100_000
_SMALL = 16  # a longer list of strings is data (feature names, vocabulary), not a credential tuple
_Memo = dict[tuple[str, str, bool], str | None]  # (name or "" for data, value, is data) -> rule, per scan


@dataclass(frozen=True)
class Finding:
    name: str  # the variable, attribute or environment variable
    where: str  # how it was reached, e.g. "global of function 'score'"
    what: str  # which rule matched

    def message(self) -> str:
        return f"'{self.name}' ({self.where}) looks like a secret: {self.what}"


@functools.cache
def _plugins(specs: str) -> tuple[Any, ...]:
    """detect-secrets' plugin objects, built once: importing them costs a tenth of a second."""
    pairs = (spec.split(":") for spec in specs.split())
    return tuple(getattr(importlib.import_module(f"detect_secrets.plugins.{m}"), c)() for m, c in pairs)


def _heuristic() -> types.ModuleType:
    return importlib.import_module("detect_secrets.filters.heuristic")


def entropy(value: str) -> float:
    """Shannon entropy in bits per character: random keys score high, words and paths low."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _placeholder(value: str) -> bool:
    """A template, mask or format field stands where a credential would go: ``${PW}``, ``***``, ``%(pw)s``."""
    h = _heuristic()
    if h.is_templated_secret(value) or h.is_prefixed_with_dollar_sign(value) or "{" in value or "%s" in value:
        return True
    return "%(" in value or set(value) <= set("*xX.#-_•") or (value[0] == "[" and value[-1] == "]")


def _shapes(text: str) -> Iterator[tuple[str, str]]:
    """(rule, match) for each credential shape in ``text``: ours, detect-secrets', URLs with a password."""
    for label, pat in PATTERNS.items():
        for m in pat.finditer(text):
            if label not in _RANDOM_BODY or entropy(m.group()) >= min(math.log2(len(m.group())) - 0.6, 4.0):
                yield label, m.group()
    for plugin in _plugins(_VALUE_SHAPES):
        for secret in plugin.analyze_string(text):
            yield plugin.secret_type, secret
    if "://" in text and "@" in text:
        for m in _URL.finditer(text):
            try:
                password = urlsplit(m.group()).password
            except ValueError:
                continue
            if password and not _placeholder(unquote(password)):
                yield "a URL with a password", m.group()


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    """A name saying it holds a credential: our words (pw, creds, dsn...) unless qualified (aws_region), or
    detect-secrets' keyword rule judging the line ``name = "..."`` (its id filter spares ``secret_id``)."""
    parts = [p.lower() for p in _NAME_PARTS.findall(name)]
    ours = any(map(_SECRET_WORD.fullmatch, parts)) or _SECRET_PHRASE.search("_".join(parts))
    if ours and not _QUALIFIER.fullmatch(parts[-1]):
        return True
    line = f'{name} = "placeholder"'
    kw = _plugins("keyword:KeywordDetector")[0]
    return any(not _heuristic().is_likely_id_string(s, line, kw) for s in kw.analyze_string(line))


def _assignment(value: str) -> str | None:
    """A credential inside a connection string or query: ``...;AccountKey=...``, ``password=...``, ``sig=...``."""
    for m in islice(_ASSIGNMENT.finditer(value), 64):
        key, val = m.groups()
        if len(val) < 4 or val.lower() in ("true", "false", "none", "null") or _placeholder(val):
            continue
        if key.lower() in ("sig", "signature", "sharedaccesssignature") or _secret_name(key):
            return f"a '{key}=' value inside a connection string"
    return None


def _path_like(value: str) -> bool:
    """A file path made of words (/Users/Me/ChurnModel/v3), not a random key that happens to hold '/'."""
    parts = re.split(r"[/\\]", value)
    if parts[0] in ("", "~", ".", "..") or re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    words = [p for p in parts if p]
    return bool(_FILE_NAME.fullmatch(value)) or (len(words) >= 2 and all(map(_PATH_PART.fullmatch, words)))


_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|0x[0-9a-fA-F]{1,8}")
_CSS_CALL = re.compile(r"[a-z]+\([\d\s.,%/+-]*\)")  # rgba(31,119,180,0.8), hsl(210, 50%, 40%)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_WORD_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[._-]")
_VOWELS = frozenset("aeiouyAEIOUY")
_CONSONANT_RUN = re.compile(r"[^aeiouyAEIOUY\d]{4,}")


#: How English words may begin with two consonants (a random fragment seldom does: Mxen, Xapj, Qadmgy).
_ONSET_TEXT = (
    "bl br ch cl cr dr dw fl fr gh gl gn gr kl kn kr ph pl pr ps qu sc sh sk sl sm sn sp sq st sw th tr ts tw wh wr"
)
_ONSETS = frozenset(_ONSET_TEXT.split(" "))


def _english_like(part: str) -> bool:
    vowels = sum(c in _VOWELS for c in part)
    low = part.lower()
    clusters = low.replace("ngth", "ng").replace("tch", "ch").replace("nth", "nt")  # length, matchstick, monthly
    onset = re.match(r"[^aeiouy]+", low)
    if onset and len(onset.group()) >= 2 and onset.group()[:2] not in _ONSETS:
        return False
    return len(part) >= 3 and vowels >= max(1, 0.25 * len(part)) and not _CONSONANT_RUN.search(clusters)


def _word_made(value: str) -> bool:
    """An identifier made of words: camelCase, PascalCase, dotted or snake: ``passwordResetCount``,
    ``TotalChargesUSD2024``, ``isPasswordExpired``, ``sklearn.preprocessing.StandardScaler``. A random key breaks
    into fragments (``qL8zR2``: q, L, 8, z, R, 2) that are neither words nor acronyms."""
    parts = _WORD_PARTS.findall(value)
    if "".join(parts) != value:
        return False
    word_chars = words = others = longest = singles = 0
    for i, part in enumerate(parts):
        following = parts[i + 1] if i + 1 < len(parts) else ""
        if part in "._-":
            continue
        if part.isdigit():  # digits end a name or precede a capital or a separator: USD2024, OAuth2Password
            if len(part) > 4 or (following and not following[0].isupper() and following not in "._-"):
                return False
            continue
        if part.isupper() and len(part) <= 5:  # an acronym: ID, USD, O(Auth)
            others += 1
            singles += len(part) == 1
        elif len(part) == 1 and following.isdigit():  # a version or index: v2, q3
            continue
        elif len(part) == 2 and _VOWELS & set(part):  # is, at, an, Db, Id
            others += 1
        elif _english_like(part):
            words += 1
            word_chars += len(part)
            longest = max(longest, len(part))
        else:
            return False
    enough = words >= 2 or (words == 1 and others >= 1 and longest >= 6)
    return enough and singles <= 1 and others <= max(1, words) and word_chars >= 0.6 * len(value)


def _not_random(value: str) -> bool:
    """Ordinary values a secret-named variable holds: identifiers, colour codes, CSS colours, e-mails."""
    return bool(_word_made(value) or _COLOUR.fullmatch(value) or _CSS_CALL.fullmatch(value) or _EMAIL.fullmatch(value))


def _plausible(value: str) -> bool:
    """A password or key; not a word, identifier, path, URL, regular expression, template or number."""
    if not _MIN_LEN <= len(value) <= 4096 or any(c.isspace() for c in value):
        return False
    h = _heuristic()
    if _path_like(value) or _URI.match(value) or _REGEX_LIKE.search(value) or _placeholder(value):
        return False
    if h.is_sequential_string(value) or h.is_not_alphanumeric_string(value) or _IDENTIFIER.fullmatch(value):
        return False
    if _not_random(value):
        return False
    bits = entropy(value)
    if value.isalpha() and (value.islower() or value.isupper()) and bits < 3.2:
        return False  # a word: "password", "credentials"
    classes = sum(any(f(c) for c in value) for f in (str.islower, str.isupper, str.isdigit))
    return bits >= min(3.0, math.log2(len(value)) - 0.5) - (0.4 if classes == 3 else 0.0)


def _high_entropy(name: str, value: str) -> bool:
    """detect-secrets' base64 entropy rule, whatever the name (a key pasted into ``blob``)."""
    b64 = _plugins("high_entropy_strings:Base64HighEntropyString")[0]
    for chunk in islice(value.split(), 64):
        if len(chunk) < 20 or _path_like(chunk):
            continue
        for found in b64.analyze_string(f'{name} = "{chunk}"'):
            if b64.calculate_shannon_entropy(found) > b64.entropy_limit:
                return not _heuristic().is_sequential_string(found)
    return False


def _classify(name: str, value: str, data: bool) -> str | None:
    """Which rule says ``value`` is a credential; data is judged by its shape alone."""
    if len(value) < _MIN_LEN:
        return None
    keyish = _CANDIDATE.search(value)
    if (keyish and not _HEX.fullmatch(value)) or ("://" in value and "@" in value):
        for label, _ in _shapes(value):
            return label
    if "=" in value and (label := _assignment(value)):
        return label
    if data:
        return None
    bare = _AUTH_SCHEME.sub("", value.strip())
    if _plausible(bare) and _secret_name(name):
        return f"{len(bare)} random-looking characters in a variable named like a secret"
    line = f'{name} = "{value}"'  # detect-secrets' detectors that read the name: ibm_cos_secret_key = "..."
    for plugin in _plugins(_CONTEXT_SHAPES) if keyish else ():
        if any(plugin.analyze_string(line)):
            return plugin.secret_type
    if _high_entropy(name, value):
        return f"{len(value)} random-looking base64 characters"
    return None


def _distinct(values: Iterable[Any]) -> list[Any]:
    """The distinct strings, and the objects (estimators in an object array), among the first values."""
    head = list(islice(values, _MAX_ELEMENTS))
    objects = [v for v in head if not isinstance(v, (str, bytes, *_SCALARS)) and type(v).__module__ != "numpy"]
    return [*dict.fromkeys(v for v in head if isinstance(v, (str, bytes))), *objects]


def _array_items(obj: Any) -> list[Any] | None:
    """The first distinct values of a numpy array or pandas object (text only); None if it is neither."""
    np, pd = sys.modules.get("numpy"), sys.modules.get("pandas")
    if np is not None and isinstance(obj, np.ndarray):
        return _distinct(obj.flat) if obj.dtype.kind in "OSU" else []
    if pd is None:
        return None
    if isinstance(obj, pd.DataFrame):
        text = [i for i, dt in enumerate(obj.dtypes) if dt.kind in "OSU" or isinstance(dt, pd.CategoricalDtype)]
        parts = [obj.columns, obj.index, *(obj.iloc[:_MAX_ELEMENTS, i] for i in text[:_MAX_COLUMNS])]
        return [v for part in parts for v in _array_items(part) or []]
    if isinstance(obj, pd.MultiIndex):
        return [v for level in obj.levels for v in _array_items(level) or []]
    if isinstance(obj, (pd.Series, pd.Index, pd.Categorical)):
        if isinstance(obj.dtype, pd.CategoricalDtype):
            return _array_items(obj.cat.categories if isinstance(obj, pd.Series) else obj.categories)
        if obj.dtype.kind not in "OSU":
            return []
        head = obj.iloc[:_MAX_ELEMENTS] if isinstance(obj, pd.Series) else obj[:_MAX_ELEMENTS]
        return _distinct(head.to_numpy(dtype=object))
    return None


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    """Instance attributes as pickle would see them: the ``__dict__`` and the ``__slots__``."""
    yield from islice(getattr(obj, "__dict__", {}).items(), _MAX_ITEMS)
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            attr = f"_{klass.__name__.lstrip('_')}{slot}" if slot.startswith("__") else slot
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, attr):
                yield slot, getattr(obj, attr)


def _children(cur: Any, name: str, where: str) -> list[tuple[Any, str, str, bool]]:
    """What ``cur`` holds, each as (value, name, where, is_data)."""
    if isinstance(cur, types.FunctionType):
        return [(v, n, w, False) for v, n, w in _function_parts(cur)]
    if isinstance(cur, dict):
        items = list(islice(cur.items(), _MAX_ITEMS))
        keys = [(k, name, where, True) for k, _ in items if isinstance(k, (str, bytes))]
        return keys + [(v, k if isinstance(k, str) else name, where, False) for k, v in items]
    if isinstance(cur, tuple) and hasattr(cur, "_fields"):
        return [(v, f, f"field of {type(cur).__name__}", False) for f, v in zip(cur._fields, cur, strict=False)]
    if isinstance(cur, (list, tuple, set, frozenset, deque)):
        return [(v, name, where, len(cur) > _SMALL) for v in islice(cur, _MAX_ITEMS)]
    if isinstance(cur, type):
        label = f"attribute of class '{cur.__name__}'"
        return [(v, k, label, False) for k, v in vars(cur).items()] if cur.__module__ == "__main__" else []
    if isinstance(cur, functools.partial):
        label = f"argument of partial '{getattr(cur.func, '__name__', 'function')}'"
        args = [(v, name, label, False) for v in cur.args] + [(v, k, label, False) for k, v in cur.keywords.items()]
        return [(cur.func, name, where, False), *args]
    if isinstance(cur, (types.MethodType, staticmethod, classmethod, property)):
        parts = (getattr(cur, a, None) for a in ("__func__", "__self__", "fget", "fset", "fdel"))
        return [(p, name, where, False) for p in parts if p is not None]
    if type(cur).__module__.startswith(("numpy", "pandas", "scipy")):
        return []
    label = f"attribute of {type(cur).__name__} object"
    return [(type(cur), name, where, False), *((v, k, label, False) for k, v in _attributes(cur))]


def _named_strings(obj: Any, limit: int = 20000) -> Iterator[tuple[str, str, str, bool]]:
    """(name, where, value, is_data) for strings reachable from ``obj`` that would be pickled with it."""
    todo: list[tuple[Any, str, str, bool]] = [(obj, "the model", "the model", False)]
    seen: set[int] = set()
    count = 0
    while todo and len(seen) < limit and count < _MAX_STRINGS:
        cur, name, where, data = todo.pop()
        if isinstance(cur, (str, bytes, bytearray)):
            count += 1
            text = cur[:_MAX_TEXT] if isinstance(cur, str) else bytes(cur[:_MAX_TEXT]).decode("latin-1")
            if isinstance(cur, str) or text.isprintable():
                yield name, where, text, data
            else:  # binary: its text judged by shape, its hex by its name (secret_key = os.urandom(24))
                yield name, where, text, True
                yield name, where, bytes(cur[:64]).hex(), data
            continue
        if isinstance(cur, _SCALARS) or id(cur) in seen:
            continue
        seen.add(id(cur))
        try:  # an exotic object (a proxy whose attributes raise) must not stop the capture: the bytes are scanned
            items = _array_items(cur)
            todo.extend(_children(cur, name, where) if items is None else ((v, name, where, True) for v in items))
        except Exception:
            continue


def _function_parts(fn: types.FunctionType) -> Iterator[tuple[Any, str, str]]:
    label = f"function '{fn.__name__}'"
    code = fn.__code__
    defaults = fn.__defaults__ or ()
    args = code.co_varnames[: code.co_argcount][-len(defaults) :] if defaults else ()
    for arg, value in zip(args, defaults, strict=False):
        yield value, arg, f"default argument of {label}"
    for arg, value in (fn.__kwdefaults__ or {}).items():
        yield value, arg, f"default argument of {label}"
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            yield cell.cell_contents, var, f"closure variable of {label}"
        except ValueError:
            continue
    if fn.__module__ in ("__main__", None) or fn.__globals__.get("__name__") == "__main__":
        for var in _global_names(code):
            if var in fn.__globals__:
                yield fn.__globals__[var], var, f"global used by {label}"
    for attr, value in vars(fn).items():
        yield value, attr, f"attribute of {label}"
    for const in code.co_consts:
        if isinstance(const, str):
            yield const, "a string literal", f"code of {label}"


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _secret_env() -> dict[str, str]:
    """Environment values that are credentials, by their name or by their content (a URL with a password)."""
    return {k: v for k, v in os.environ.items() if len(v) >= _MIN_LEN and _classify(k, v, False)}


_Buffers = frozenset[tuple[int, bytes]] | set[tuple[int, bytes]]


def _blob_texts(blob: bytes | bytearray, depth: int, skip: _Buffers = frozenset()) -> Iterator[tuple[str, bool]]:
    """The text in a pickled byte string: a pickle inside, a numpy unicode (UTF-32) or bytes array, or none.
    ``skip`` holds the numeric arrays' buffers (length, first bytes) the pickler wrote: numbers, never text."""
    if skip and (len(blob), bytes(blob[:64])) in skip:
        return
    head = bytes(blob[:4096])
    if head[:1] == b"\x80" and depth < 2:
        yield from _pickled_texts(bytes(blob), depth + 1, skip)
        return
    zeros, text = head.count(0), len(head.translate(None, _NOT_TEXT))
    if text < 0.9 * len(head) or text == zeros:
        return  # numbers, compressed or zeros: no credential reads as text there
    wide = zeros >= len(head) // 2 and head[2::4].count(0) + head[3::4].count(0) == len(head[2::4]) + len(head[3::4])
    raw = bytes(blob[: len(blob) // 4 * 4]) if wide else bytes(blob)
    yield raw.decode("utf-32-le" if wide else "latin-1", errors="ignore").replace("\x00", "\n"), False


class _NumpyBuffers:
    """Tells, while the pickle's opcodes go by, which byte strings are numpy arrays of numbers: the buffer
    handed to ``numpy..._frombuffer`` (its dtype follows it) or the raw data of ``_reconstruct`` (its dtype
    precedes it). Globals and strings are followed through the memo, as pickle itself does."""

    _SMALL = 4096

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.strings: deque[str] = deque(maxlen=2)
        self.last: Any = None
        self.frombuffer = self.want_dtype = False
        self.dtype: str | None = None
        self.since_dtype = 99
        self.pending: bytes | bytearray | None = None

    @staticmethod
    def numeric(code: str) -> bool:
        return code.lstrip("<>|=")[:1] in tuple("biufcmM")

    def _global(self, name: str) -> None:
        self.last = ("global", name)
        if name.startswith("numpy") and name.endswith("._frombuffer"):
            self.frombuffer = True
        elif name == "numpy.dtype":
            self.want_dtype = True

    def _string(self, text: str) -> bool | None:
        """A string went by; returns whether the pending buffer is numeric, once its dtype is known."""
        self.strings.append(text)
        self.last = text
        if not self.want_dtype:
            return None
        self.want_dtype, self.dtype, self.since_dtype = False, text, 0
        return self.numeric(text) if self.pending is not None else None

    def step(self, name: str, arg: Any) -> tuple[str, Any]:
        """Follow one opcode: ("text", str), ("blob", bytes), ("decided", (bytes, numeric)) or ("", None)."""
        self.since_dtype += 1
        if isinstance(arg, str) and name != "GLOBAL":
            decided = self._string(arg)
            if decided is not None:
                blob, self.pending = self.pending, None
                return "decided", (blob, decided)
            return "text", arg
        if name == "GLOBAL":
            self._global(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            self._global(".".join(self.strings))
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            value = self.memo.get(arg)
            if isinstance(value, tuple):
                self._global(value[1])
            elif isinstance(value, str):
                decided = self._string(value)
                if decided is not None:
                    blob, self.pending = self.pending, None
                    return "decided", (blob, decided)
            else:
                self.last = value
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.last
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = self.last
        elif isinstance(arg, (bytes, bytearray)):
            self.last = None
            if len(arg) >= self._SMALL and self.frombuffer:
                self.frombuffer = False
                self.pending = arg  # judged when its dtype shows
                return "", None
            if len(arg) >= self._SMALL and self.dtype and self.since_dtype < 40 and self.numeric(self.dtype):
                return "", None  # _reconstruct's raw data, right after a numeric dtype
            return "blob", arg
        else:
            self.last = None
        return "", None


def _pickled_texts(payload: bytes, depth: int = 0, skip: _Buffers = frozenset()) -> Iterator[tuple[str, bool]]:
    """(text, is one whole string) for every string the pickle holds and the text in its byte strings, numpy
    buffers of numbers left out; the printable runs of the bytes if they are not a pickle this can walk."""
    arrays = _NumpyBuffers()
    try:
        for op, arg, _ in pickletools.genops(payload):
            kind, value = arrays.step(op.name, arg)
            if kind == "text":
                yield value, True
            elif kind == "blob" and len(value) >= _MIN_LEN:
                yield from _blob_texts(value, depth, skip)
            elif kind == "decided":
                blob, numeric = value
                if not numeric:
                    yield from _blob_texts(blob, depth, skip)
                if isinstance(arg, str):
                    yield arg, True
        if arrays.pending is not None:
            yield from _blob_texts(arrays.pending, depth, skip)
    except Exception:
        yield "\n".join(m.decode("latin-1") for m in _ASCII_RUN.findall(payload)), False


def _payload_findings(
    payload: bytes, env: dict[str, str], allowed: set[str], known: set[str], memo: _Memo, skip: _Buffers
) -> list[Finding]:
    """Credentials in the pickle that the named view did not report (or was told to allow)."""
    texts = dict.fromkeys(_pickled_texts(payload, 0, skip))
    found = [
        Finding(var, "environment variable", "its value is inside the serialised model")
        for var, value in env.items()
        if not any(value in v for v in known) and any(value in t for t, _ in texts)
    ]
    known.update(env[f.name] for f in found)
    budget = _FULL_TEXT  # characters judged by every rule; past it, only where a credential's marker shows
    for text, whole in texts:
        if budget <= 0 or (not whole and len(text) > budget):
            hits = list(_marked_shapes(text, whole, memo))
        elif whole and len(text) <= _MAX_TEXT:  # one pickled string, judged whole as data, as the named view does
            key = ("", text, True)
            if key not in memo:
                memo[key] = _classify("", text, True)
            hits = [(memo[key], text)] if memo[key] else []
        else:
            hits = list(_long_shapes(text)) if _CANDIDATE.search(text) or "://" in text else []
        budget -= len(text)
        for label, secret in hits:
            if label not in allowed and not any(secret in v or v in secret for v in known):
                known.add(secret)
                found.append(Finding(label, "serialised bytes", f"{label} pattern in the pickled model"))
    return found


#: Characters of pickled text judged by every rule; past this (a vocabulary, a text column of millions of rows),
#: text is judged only around the markers credential shapes carry, so the scan stays near I/O speed.
_FULL_TEXT = 1_000_000
_WINDOW = 400
_CHUNK = 2048  # long text is judged in overlapping pieces: some detect-secrets rules are quadratic in a line
#: One regular expression per marker, each starting with a literal, so the engine jumps between occurrences
#: (an alternation of them, or a case-insensitive one, is ten times slower). Shapes with no literal (Telegram,
#: Discord) are judged in the first _FULL_TEXT characters only.
_MARKERS = tuple(
    re.compile(p)
    for p in (
        "AKIA|ASIA",
        "gh[pousr]_|github_pat_",
        "xox[abposr]-",
        "sk-",
        "k_live_",
        "k_test_",
        "AIza",
        "PRIVATE KEY",
        "eyJ",
        "hf_",
        "npm_",
        "_authToken",
        "dapi",
        "GOCSPX-",
        "AKCp",
        "glpat-",
        "pypi-",
        r"SG\.",
        "sq0",
        "AC[0-9a-f]{32}",
        "-us\\d",
        "PuTTY",
        r"://[^\s/@'\"]{0,256}@",
        *(f"{word}=" for word in ("ass", "ASS", "assword", "ASSWORD", "asswd", "ASSWD", "wd", "WD", "ecret")),
        *(f"{word}=" for word in ("ECRET", "oken", "OKEN", "ey", "EY", "sig", "ignature", "IGNATURE")),
    )
)


def _chunks(text: str) -> Iterator[str]:
    step = _CHUNK - _WINDOW
    for start in range(0, max(len(text) - _WINDOW, 1), step):
        yield text[start : start + _CHUNK]


def _long_shapes(text: str) -> Iterator[tuple[str, str]]:
    """Every rule over a long text, in overlapping pieces (a secret is shorter than the overlap)."""
    if len(text) <= _CHUNK:
        yield from _shapes(text)
        return
    for chunk in _chunks(text):
        if _CANDIDATE.search(chunk) or "://" in chunk:
            yield from _shapes(chunk)


def _marked_shapes(text: str, whole: bool, memo: _Memo) -> Iterator[tuple[str, str]]:
    """Credential shapes in ``text``, judged only where one of their markers shows."""
    if whole and len(text) <= _MAX_TEXT:
        if any(m.search(text) for m in _MARKERS):
            key = ("", text, True)
            if key not in memo:
                memo[key] = _classify("", text, True)
            if memo[key]:
                yield memo[key] or "", text
        return
    spans: list[tuple[int, int]] = []
    for marker in _MARKERS:
        spans.extend(m.span() for m in islice(marker.finditer(text), 10_000))
    spans.sort()
    start = end = -1
    for a, b in [*spans, (len(text) + 2 * _WINDOW + 1, 0)]:
        if a - _WINDOW > end:
            if end >= 0:
                window = text[max(0, start - _WINDOW) : end + _WINDOW]
                yield from _shapes(window)
                if "=" in window and (label := _assignment(window)):
                    yield label, window
            start, end = a, b
        else:
            end = max(end, b)


def scan(
    obj: Any, payload: bytes, allow: list[str] | None = None, *, skip_buffers: _Buffers = frozenset()
) -> list[Finding]:
    """Every credential-looking value that would travel with ``obj``; ``allow`` names false positives;
    ``skip_buffers`` the numeric buffers in ``payload`` (``serialize.dump(obj).numeric_buffers``)."""
    allowed = set(allow or [])
    env = {k: v for k, v in _secret_env().items() if k not in allowed}
    findings: dict[str, Finding] = {}
    known: set[str] = set()  # values reported or allowed by name: the pickled view need not report them again
    memo: _Memo = {}
    for name, where, value, data in _named_strings(obj):
        if name in allowed or name in findings:
            known.add(value)
            continue
        key = ("" if data else name, value, data)
        if key not in memo:
            source = next((k for k, v in env.items() if v in value), None)
            memo[key] = f"the value of environment variable '{source}'" if source else _classify(name, value, data)
        if memo[key]:
            shown = name if next(_shapes(name), None) is None else "a dictionary key"  # never repeat a secret
            findings[name] = Finding(shown, where, memo[key])
            known.add(value)
    for found in _payload_findings(payload, env, allowed, known, memo, skip_buffers):
        findings.setdefault(found.name, found)
    return list(findings.values())


def check(obj: Any, payload: bytes, allow: list[str] | None = None, *, skip_buffers: _Buffers = frozenset()) -> None:
    """Raise ``SecretFoundError`` naming each credential found; nothing has been written yet."""
    found = scan(obj, payload, allow, skip_buffers=skip_buffers)
    if found:
        first = found[0]
        more = "; ".join(f.message() for f in found[1:])
        raise SecretFoundError(
            f"refusing to capture: {first.message()}" + (f"; also {more}" if more else ""),
            hint=f"read it at serving time, e.g. from os.environ, instead of capturing it; "
            f"if it is not a secret, pass allow_secrets=['{first.name}']",
        )
