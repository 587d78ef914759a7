"""API tokens and the owners they stand for. Pure: no Ray, no HTTP (the ingress wires it in).

Tokens are only ever kept as SHA-256 hex digests. Two sources, merged:

- a file (setting `api_tokens_file`), one token per line: `owner sha256hex [admin]`
  (`#` starts a comment). `python -m scribble_ray.auth OWNER [admin]` makes a token
  and its line; or hash your own with `printf %s "$TOKEN" | sha256sum`;
- the setting / environment variable `SCRIBBLE_API_TOKENS`:
  `owner1=token1,admin:ops=token2`. A value may also be given pre-hashed as
  `sha256:HEX`. Plain values are hashed when the settings are resolved.

No token configured at all is the open mode: every caller is owner `local`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_OWNER = "local"
HASH_PREFIX = "sha256:"
ADMIN_PREFIX = "admin:"
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
HEX_RE = re.compile(r"[0-9a-f]{64}")
MIN_TOKEN_CHARS = 16


class TokenConfigError(ValueError):
    """The token configuration cannot be used (never quotes a token)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner of the jobs it submits; admins see every owner's jobs."""

    owner: str
    admin: bool = False

    def may_see(self, job_owner: str) -> bool:
        return self.admin or job_owner == self.owner


OPEN_PRINCIPAL = Principal(LOCAL_OWNER)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def _owner(name: str, where: str) -> str:
    if not OWNER_RE.fullmatch(name):
        raise TokenConfigError(
            f"{where}: owner names are 1-64 of A-Z a-z 0-9 _ . @ - (got {name[:64]!r})"
        )
    return name


def _parse_spec(spec: str) -> list[tuple[str, bool, str]]:
    """`[admin:]owner=value` entries as (owner, admin, sha256hex); plain values are hashed."""
    out = []
    for n, raw in enumerate(filter(None, (e.strip() for e in spec.split(","))), start=1):
        where = f"api_tokens entry {n}"
        name, sep, value = raw.partition("=")
        if not sep or not value:
            raise TokenConfigError(f"{where}: expected owner=token or admin:owner=token")
        admin = name.startswith(ADMIN_PREFIX)
        owner = _owner(name.removeprefix(ADMIN_PREFIX).strip(), where)
        if value.startswith(HASH_PREFIX):
            digest = value.removeprefix(HASH_PREFIX).lower()
            if not HEX_RE.fullmatch(digest):
                raise TokenConfigError(f"{where}: sha256: needs 64 hex digits")
        elif len(value) < MIN_TOKEN_CHARS or any(c.isspace() for c in value):
            raise TokenConfigError(
                f"{where}: tokens need at least {MIN_TOKEN_CHARS} characters and no spaces"
            )
        else:
            digest = hash_token(value)
        out.append((owner, admin, digest))
    return out


def hash_token_spec(spec: str) -> str:
    """The same spec with every plain token replaced by `sha256:HEX` (idempotent)."""
    return ",".join(
        f"{ADMIN_PREFIX if admin else ''}{owner}={HASH_PREFIX}{digest}"
        for owner, admin, digest in _parse_spec(spec)
    )


def parse_tokens_file(text: str, where: str = "api_tokens_file") -> list[tuple[str, bool, str]]:
    """Lines `owner sha256hex [admin]` as (owner, admin, sha256hex)."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        at = f"{where} line {n}"
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
            raise TokenConfigError(f"{at}: expected `owner sha256hex [admin]`")
        digest = parts[1].lower()
        if not HEX_RE.fullmatch(digest):
            raise TokenConfigError(f"{at}: the second field must be a SHA-256 hex digest")
        out.append((_owner(parts[0], at), len(parts) == 3, digest))
    return out


class TokenTable:
    """SHA-256 of a token -> its Principal. Empty: the open mode."""

    def __init__(self, entries: list[tuple[str, bool, str]]) -> None:
        self._by_hash: dict[str, Principal] = {}
        for owner, admin, digest in entries:
            known = self._by_hash.get(digest)
            if known is not None and known != Principal(owner, admin):
                raise TokenConfigError(f"one token is configured for two owners ({owner})")
            self._by_hash[digest] = Principal(owner, admin)

    @property
    def open(self) -> bool:
        return not self._by_hash

    def __len__(self) -> int:
        return len(self._by_hash)

    def owners(self) -> Mapping[str, bool]:
        """Owner -> admin, for start-up logs (no hashes, no tokens)."""
        return {p.owner: p.admin for p in self._by_hash.values()}

    def lookup(self, token: str) -> Principal | None:
        # A dict lookup by digest: the time taken says nothing useful about a token.
        return self._by_hash.get(hash_token(token))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller of an `Authorization` header; None when it is missing or wrong."""
        if self.open:
            return OPEN_PRINCIPAL
        token = bearer_token(authorization)
        return self.lookup(token) if token else None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def load_tokens(tokens_file: str | None, spec: str | None) -> TokenTable:
    """The table from the file and the spec (both optional); errors name no token."""
    entries: list[tuple[str, bool, str]] = []
    if tokens_file:
        path = Path(tokens_file).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise TokenConfigError(f"api_tokens_file {path}: {exc.strerror}") from None
        entries += parse_tokens_file(text, where=f"api_tokens_file {path}")
        if not entries:
            raise TokenConfigError(f"api_tokens_file {path} names no token")
    if spec:
        entries += _parse_spec(spec)
    return TokenTable(entries)


def tokens_configured(tokens_file: str | None, spec: str | None) -> bool:
    return bool(tokens_file or spec)


def main(argv: list[str] | None = None) -> int:
    """`python -m scribble_ray.auth OWNER [admin]`: a new token, and its tokens-file line."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or (len(args) == 2 and args[1] != "admin"):
        print("usage: python -m scribble_ray.auth OWNER [admin]", file=sys.stderr)
        return 2
    owner = _owner(args[0], "owner")
    token = new_token()
    print(f"token (give it to {owner}; it is not stored anywhere): {token}")
    print(f"api_tokens_file line: {owner} {hash_token(token)}{' admin' if len(args) == 2 else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
