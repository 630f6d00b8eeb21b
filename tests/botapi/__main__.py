"""Run the fake Bot API by hand: python -m tests.botapi --port 8081 --token ...

Lines typed on stdin are sent to the bot by one simulated user; "/click LABEL" presses a
button, "/photo", "/location LAT LON" and "/contact PHONE" send those. Calls the bot makes
are printed as they happen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .server import DEFAULT_TOKEN, BotApiServer


async def _console(server: BotApiServer, user_id: int) -> None:
    user = server.user(id=user_id, first_name="Tester")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await asyncio.Event().wait()  # stdin closed: keep serving
        command, _, rest = line.strip().partition(" ")
        try:
            if command == "/click":
                await server.click(user, rest)
            elif command == "/photo":
                await server.send_photo(user, rest or None)
            elif command == "/location":
                lat, lon = (float(x) for x in rest.split())
                await server.send_location(user, lat, lon)
            elif command == "/contact":
                await server.send_contact(user, rest)
            elif line.strip():
                await server.send_text(user, line.strip())
        except (AssertionError, ValueError) as e:
            print(f"! {e}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    server = BotApiServer(token=args.token, bot_username=args.bot_username)
    await server.start(host=args.host, port=args.port)
    try:
        server.on_call(lambda call: print(f"< {call.summary()}", flush=True))
        print(f"Bot API listening on {server.url}", flush=True)
        print(
            f"aiogram: AiohttpSession(api=TelegramAPIServer.from_base({server.url!r}))", flush=True
        )
        await _console(server, args.user_id)
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.botapi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--bot-username", default="village_beat_bot")
    parser.add_argument("--user-id", type=int, default=100_000_001)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
