"""The admin console in the browser (`/console/`): its page and static files (pages.py), sign-in sessions
(session.py), the session cookie's checks (cookie.py) and the headers its files are sent with (headers.py)."""
