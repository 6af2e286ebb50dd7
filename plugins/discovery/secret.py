"""The shared secret that signs the server's announcements, configured alike on both sides."""

from __future__ import annotations

from pathlib import Path

from pidaemon.schema import String, settings


@settings
class SigningSettings:
    """The `secret`/`secret_file` settings of both the announce and the discovery plugin."""

    secret: str | None = String(default=None, doc="shared secret: datagrams carry an HMAC-SHA256 made with it")
    secret_file: str | None = String(default=None, doc="read the shared secret from this file (preferred)")

    def read_secret(self) -> str | None:
        """The shared secret from `secret` or `secret_file` (not both); None when neither is set."""
        if self.secret and self.secret_file:
            raise ValueError("give secret or secret_file, not both")
        if self.secret_file:
            try:
                text = Path(self.secret_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"secret_file: cannot read {self.secret_file}: {exc.strerror or exc}") from None
            if not text:
                raise ValueError(f"secret_file {self.secret_file} is empty")
            return text
        return self.secret or None
