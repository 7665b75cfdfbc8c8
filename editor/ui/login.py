"""Password check for `python app.py --auth user:pass` that makes guessing slow.

Gradio answers every login at once, so a script can try passwords as fast as the server replies. Gradio accepts a
callable for `auth` and awaits it when it is a coroutine function (the login route of gradio 6), so `throttled_auth`
returns one: a wrong user or password waits `delay_s` while holding one lock shared by all clients, so failed logins
are answered at most one per `delay_s` in all (Gradio does not pass the client's address, so there is no per-client
limit). Right credentials never wait. Passwords are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

FAILED_LOGIN_DELAY_S = 1.0


def throttled_auth(
    pairs: list[tuple[str, str]], delay_s: float = FAILED_LOGIN_DELAY_S
) -> Callable[[str, str], Awaitable[bool]]:
    """An async `auth` callable for Gradio's launch(): True for a known (user, password) pair, else False after
    waiting its turn for `delay_s`."""
    known = {user: password.encode() for user, password in pairs}
    lock: list[asyncio.Lock] = []  # made on first use, inside the server's event loop

    async def check(username: str, password: str) -> bool:
        expected = known.get(username)
        given = password.encode("utf-8", "surrogatepass") if isinstance(password, str) else b""
        if expected is not None and hmac.compare_digest(expected, given):
            return True
        if not lock:
            lock.append(asyncio.Lock())
        async with lock[0]:
            await asyncio.sleep(delay_s)
        return False

    return check
