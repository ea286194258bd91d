"""The one transport check: every URL the factory fetches, or hands to pip, uv or git, passes here.

A URL is normalised first (surrounding whitespace stripped, the scheme lower-cased), so that
" http://..." or "HTTP://..." is judged as the http it is, and the normalised form is what is
used afterwards. Plain-text transports (http, git) are refused unless the user opted in
(`allow_insecure = true` in a source table, `--allow-insecure-index`): anyone on the network
path can rewrite what they serve. A scheme the caller does not expect (ftp for an index, http for
an adopted wheel) is refused outright.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from ..core.errors import InputError
from ..core.grammar import check_text

# Transports anyone on the network path can rewrite.
PLAIN = {"http", "git"}
INDEX_SCHEMES = frozenset({"https", "http", "file"})  # pip and uv read a simple index over these
ARCHIVE_SCHEMES = frozenset({"https", "http"})  # what the factory itself downloads
# A wheel pip downloads for an adopting release (http is there to be refused with the plain-text
# message: adopt has no opt-in, a wheel downloaded by hand is adopted by its path).
ADOPT_SCHEMES = frozenset({"https", "http", "file"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def normalise(url: str) -> str:
    """url without surrounding whitespace and with its scheme in lower case."""
    url = url.strip()
    m = _SCHEME.match(url)
    return m[1].lower() + url[len(m[1]):] if m else url


def scheme_of(url: str) -> str | None:
    """The lower-cased scheme of a scheme://... URL, else None."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", normalise(url))
    return m[1].lower() if m else None


def is_plain(url: str) -> bool:
    """Whether url travels over a plain-text transport (http, git)."""
    return scheme_of(url) in PLAIN


def check_url(url: str, allow_insecure: bool, where: str, how_to_allow: str,
              schemes: Collection[str] = ARCHIVE_SCHEMES) -> str:
    """The normalised URL, or InputError: not a URL of one of `schemes`, whitespace or control
    characters in it, or a plain-text transport without the opt-in (`how_to_allow` says how)."""
    text = normalise(url)
    check_text(text, where)
    scheme = scheme_of(text)
    if scheme is None or any(c.isspace() for c in text):
        example = "https" if "https" in schemes else sorted(schemes)[0]
        raise InputError(f"{where}: {url!r} is not a URL of the form {example}://host/path"
                         f"{' (no spaces inside: write them as %20)' if scheme else ''}")
    if scheme not in schemes:
        raise InputError(f"{where}: {url!r} uses {scheme}://, and only {', '.join(sorted(schemes))} are taken here")
    _refuse_plain(url, scheme, allow_insecure, where, how_to_allow)
    return text


def check_git_transport(url: str, allow_insecure: bool, where: str, how_to_allow: str) -> None:
    """A git URL's transport (grammar.check_git_url has judged its form): plain http and git://
    need the opt-in; ssh, file, scp-like and local paths do not."""
    _refuse_plain(url, scheme_of(url), allow_insecure, where, how_to_allow)


def _refuse_plain(url: str, scheme: str | None, allow_insecure: bool, where: str, how_to_allow: str) -> None:
    if scheme in PLAIN and not allow_insecure:
        raise InputError(f"{where}: {url!r} is fetched over plain {scheme}, which anyone on the network "
                         f"path can alter; use https, or {how_to_allow} if you trust this network")
