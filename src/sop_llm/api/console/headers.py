"""The headers every console page and static file is sent with. The policy allows scripts, styles, images and
connections from this origin only, and no inline script or style: a string that reaches the page from the data it
shows (a prompt in the request log, a key's name) cannot run even if it were ever inserted as HTML."""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # the monitoring WebSocket too: 'self' covers ws:// and wss:// of this host
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
