"""The shared secret that signs discovery, configured alike on the server and every node.

Signed is the default: a section of `announce` or `discovery` must give
`secret_file` (or `secret`), or say `insecure: true` (a trial on one desk,
as config/desktop*.yaml do).  Anything else is a
configuration error that `pidaemon config check` reports with file, line and
dotted path.  Those three settings can only be judged together, which a
field cannot do: `signing_checked` gives the settings class a section that
checks them after the fields (`SigningSection`).

`config check` does not read `secret_file`: the same role file is checked on
a desk and used on the nodes, where the file lives.  The plugins read it when
they are created, and fail saying what to do if it is missing, empty or too short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pidaemon.schema import SETTINGS_SECTION, Boolean, Problem, Section, String, section_of, settings

MIN_SECRET_LENGTH = 16
SECRET_FILE_EXAMPLE = "/etc/pidaemon/cluster-secret"
SIGNING_FIELDS = ("secret", "secret_file", "insecure")


@settings
class SigningSettings:
    """The `secret`/`secret_file`/`insecure` settings of both the announce and the discovery plugin."""

    secret: str | None = String(default=None, doc="shared secret: datagrams carry an HMAC-SHA256 made with it")
    secret_file: str | None = String(default=None, doc="read the shared secret from this file (preferred)")
    insecure: bool = Boolean(default=False,
                             doc="no secret: send and accept unsigned announcements; for a trial on one desk "
                                 "only, since any host on the LAN can then redirect the nodes")

    def read_secret(self) -> str | None:
        """The shared secret from `secret` or `secret_file`; None with `insecure: true`.

        Raises ValueError, saying what to do, when the settings or the file are not usable.
        """
        problems = signing_problems({name: getattr(self, name) for name in SIGNING_FIELDS})
        if problems:
            raise ValueError("; ".join(f"{field}: {message}" for field, message in problems))
        if self.insecure:
            return None
        if self.secret_file:
            path = Path(self.secret_file)
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"secret_file: cannot read {path}: {exc.strerror or exc}; "
                                 f"{how_to_create(path)}") from None
            if len(text) < MIN_SECRET_LENGTH:
                raise ValueError(f"secret_file {path} holds {'nothing' if not text else 'a secret too short'} "
                                 f"(at least {MIN_SECRET_LENGTH} characters); {how_to_create(path)}")
            return text
        return self.secret

    def secret_file_warning(self) -> str | None:
        """A warning when `secret_file` can be read by others than its owner; None when it is fine."""
        if not self.secret_file:
            return None
        try:
            mode = Path(self.secret_file).stat().st_mode & 0o777
        except OSError:
            return None
        if not mode & 0o077:
            return None
        return (f"secret_file {self.secret_file} is readable by others (mode {mode:03o}): whoever reads it can "
                f"redirect the nodes; chmod 600 it")


def how_to_create(path: str | Path) -> str:
    return (f"create it once with `openssl rand -hex 32 > {path}` and `chmod 600 {path}`, owned by the user "
            f"pidaemon runs as, and install the same file on the server and on every node")


def signing_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with `secret`, `secret_file` and `insecure` taken together: (field, message) pairs."""
    secret, secret_file, insecure = (values.get(name) for name in SIGNING_FIELDS)
    if insecure:
        if secret or secret_file:
            return [("insecure", ("true, but a secret is configured too: remove `insecure` (announcements are "
                                  "then signed) or the secret"))]
        return []
    if secret and secret_file:
        return [("secret_file", "give secret or secret_file, not both")]
    if secret_file:
        return []
    if secret:
        if len(secret.strip()) < MIN_SECRET_LENGTH:
            return [("secret", (f"too short: at least {MIN_SECRET_LENGTH} characters "
                                f"(`openssl rand -hex 32` makes 64)"))]
        return []
    return [("secret_file", ("missing: discovery is signed with the cluster's shared secret and none is "
                             f"configured. Set secret_file: {SECRET_FILE_EXAMPLE} and "
                             f"{how_to_create(SECRET_FILE_EXAMPLE)}; or, for a trial on one desk only, "
                             "set insecure: true"))]


class SigningSection(Section):
    """A plugin's section whose signing settings are also judged together, after each field alone."""

    def check(self, value, path, problems):
        before = len(problems)
        result = super().check(value, path, problems)
        if not isinstance(result, dict):
            return result
        own = {path + (name,) for name in SIGNING_FIELDS}
        if not any(problem.path in own for problem in problems[before:]):  # a bad field is reported once
            problems.extend(Problem(path + (name,), message) for name, message in signing_problems(result))
        return result

    def extended(self, more):
        return SigningSection({**self.fields, **more})


def signing_checked(cls: type) -> type:
    """Class decorator, above `@settings`: validation (`config check`, start-up) also judges
    `secret`, `secret_file` and `insecure` together."""
    setattr(cls, SETTINGS_SECTION, SigningSection(section_of(cls).fields))
    return cls
