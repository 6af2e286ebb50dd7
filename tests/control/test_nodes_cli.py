"""`pidaemon nodes forget`: the command asks the server's registry, which forgets and clears retained topics."""

from __future__ import annotations

import asyncio
import json

import pytest

from pidaemon.cli import main
from tests.support.control_plane import daemon, registry_section, wait_until


def test_forget_an_offline_node_refuse_an_online_one_name_an_unknown_one(broker, observer, tmp_path, capsys):
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"ping": {}, "registry": registry_section(tmp_path)})
        workers = [daemon(n, broker.url, tmp_path / n, plugins={"ping": {}}) for n in ("up", "gone")]
        await server.start()
        for w in workers:
            await w.start()
        registry = server.plugin("registry")
        state = lambda n: (registry.record(n) or {}).get("state")  # noqa: E731
        try:
            await wait_until(lambda: state("up") == "online" and state("gone") == "online", what="registered")
            await workers[1].shutdown()
            await wait_until(lambda: state("gone") == "offline", what="gone offline")
            mark = len(observer.messages)
            code = await asyncio.to_thread(main, ["nodes", "forget", "gone", "up", "never", "--broker", broker.url])
            out = capsys.readouterr().out
            code_json = await asyncio.to_thread(main, ["nodes", "forget", "up", "--force", "--json",
                                                       "--broker", broker.url])
            answer = json.loads(capsys.readouterr().out)
            cleared = {m.topic for m in observer.messages[mark:] if m.payload == b"" and "/gone/" in m.topic}
            return code, out, code_json, answer, cleared, state("gone")
        finally:
            await workers[0].shutdown()
            await server.shutdown()

    code, out, code_json, answer, cleared, gone = asyncio.run(scenario())
    assert code == 1   # not every node was forgotten
    assert out.splitlines() == ["forgot gone", "up is online: not forgotten (--force to forget it anyway)",
                                "never: not in the registry of server server"]
    assert code_json == 0 and answer == {"server": "server", "forgotten": ["up"], "refused": {}, "unknown": []}
    assert gone is None
    assert cleared == {f"picluster/nodes/gone/{kind}" for kind in ("status", "info", "telemetry", "health")}


def test_forget_without_a_server_says_that_nobody_answered(broker, capsys):
    code = main(["nodes", "forget", "pi-1", "--broker", broker.url, "--timeout", "0.5"])
    assert code == 3
    assert "no answer" in capsys.readouterr().err


def test_forget_refuses_an_id_outside_the_name_rule(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["nodes", "forget", "a+b"])
    assert stopped.value.code == 2 and "not a node id" in capsys.readouterr().err
