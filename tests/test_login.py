"""Failed logins are slowed down (one answer per delay across all clients); right ones are not; auth still holds."""

from __future__ import annotations

import asyncio
import inspect
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from editor.ui import build_demo
from editor.ui.login import throttled_auth
from tests.fakes import FakeEditor, free_port


def test_wrong_logins_wait_their_turn_and_right_ones_do_not():
    check = throttled_auth([("alice", "s3cret")], delay_s=0.05)
    assert inspect.iscoroutinefunction(check)  # Gradio awaits only coroutine functions; anything else is truthy

    async def attempts():
        start = time.perf_counter()
        wrong = [asyncio.create_task(check("alice", f"guess{i}")) for i in range(6)]
        wrong.append(asyncio.create_task(check("mallory", "s3cret")))
        await asyncio.sleep(0)  # the failures are waiting their turn now
        right = await check("alice", "s3cret")
        pending_when_right = sum(not task.done() for task in wrong)
        results = await asyncio.gather(*wrong)
        return results, time.perf_counter() - start, right, pending_when_right

    wrong, slow, right, pending = asyncio.run(attempts())
    assert wrong == [False] * 7 and slow >= 7 * 0.05 * 0.95  # serialised: one failure per delay
    assert right is True and pending == 7  # the right login did not queue behind them


def _login(url: str, user: str, password: str) -> int:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "login", body), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_served_app_slows_failed_logins_and_refuses_unauthenticated_calls():
    demo = build_demo({"fake": FakeEditor()}, examples_dir=None).queue()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                auth=throttled_auth([("alice", "s3cret")], delay_s=0.2))  # fmt: skip
    try:
        url = demo.local_url
        start = time.perf_counter()
        with ThreadPoolExecutor(5) as pool:
            codes = list(pool.map(lambda i: _login(url, "alice", f"guess{i}"), range(5)))
        assert codes == [400] * 5 and time.perf_counter() - start >= 5 * 0.2 * 0.95
        assert _login(url, "alice", "s3cret") == 200
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=30)
            raise AssertionError("the API answered without credentials")
        except urllib.error.HTTPError as err:
            assert err.code == 401
    finally:
        demo.close()
