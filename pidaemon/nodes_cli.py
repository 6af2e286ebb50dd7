"""`pidaemon nodes forget`: remove nodes that left the cluster for good from the server's registry.

    pidaemon nodes forget pi-1a2b3c pi-4d5e6f            # offline (or unhealthy, unknown) nodes
    pidaemon nodes forget pi-1a2b3c --force              # even an online one

The command asks the server: it publishes `{"nodes": [...], "force": false,
"reply_to": "<prefix>/replies/<client id>"}` on `<prefix>/registry/forget`
(QoS 1, not retained) and waits for the answer `{"server", "forgotten": [ids],
"refused": {id: "online"}, "unknown": [ids]}`.  The registry decides from the
states it holds (an `online` node is refused without `force`), removes the
records and clears each node's retained status, info, telemetry and health,
so that nothing brings them back.  With the ACL of config/mosquitto.acl, the
broker user must be allowed to publish on `<prefix>/registry/forget`.

Exit status: 0 every node forgotten; 1 some were refused or unknown; 2 a usage
error; 3 no answer (no server running the registry, or the broker dropped the
command); 4 the broker cannot be used; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .cli_client import (BrokerError, CliClient, PublishRefused, UsageError, add_connection_arguments,
                         settings_from_args)
from .names import NAME_DOC, TOPIC_PREFIX_DOC, is_name, is_topic_prefix
from .topics import Topics

EXIT_OK, EXIT_NOT_ALL, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_BROKER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
REGISTRY_TOPIC = "registry"  # the registry plugin's `topic` setting (default)


def _node_id(text: str) -> str:
    if not is_name(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a node id ({NAME_DOC})")
    return text


def add_commands(subparsers) -> None:
    nodes = subparsers.add_parser("nodes", help="manage the nodes the server's registry holds")
    actions = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    forget = actions.add_parser(
        "forget", help="remove nodes that left for good from the registry, and clear their retained topics",
        description="Ask the server's registry to forget nodes: their records go, and their retained status, info, "
                    "telemetry and health are cleared. An online node is refused unless --force. To forget nodes "
                    "offline for a while automatically, set forget_after in the server's registry section.")
    forget.add_argument("nodes", nargs="+", type=_node_id, metavar="ID", help="node ids")
    forget.add_argument("--force", action="store_true",
                        help="forget online nodes too (a node still running comes back at its next message)")
    add_connection_arguments(forget)
    forget.add_argument("--registry-topic", default=REGISTRY_TOPIC, metavar="TOPIC",
                        help=f"the registry's topic under the prefix (its `topic` setting; default {REGISTRY_TOPIC})")
    forget.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the broker and for the server's answer (default 5)")
    forget.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    forget.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    client_id = f"pidaemon-nodes-{os.urandom(4).hex()}"
    topics = Topics(args.prefix)
    try:
        settings = settings_from_args(args, client_id)
        if not is_topic_prefix(args.registry_topic):
            raise UsageError(f"--registry-topic {args.registry_topic!r}: expected {TOPIC_PREFIX_DOC}")
    except UsageError as exc:
        print(f"pidaemon nodes forget: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command_topic = topics.join(args.registry_topic, "forget")
    reply_topic = topics.join("replies", client_id)
    from .bus import Subscription

    client = CliClient(settings)
    interrupted = False
    try:
        client.connect(args.timeout)
        client.subscribe([Subscription(reply_topic)], args.timeout)
        request = {"nodes": list(dict.fromkeys(args.nodes)), "force": args.force, "reply_to": reply_topic}
        deadline = time.monotonic() + args.timeout
        client.publish(command_topic, request, timeout=args.timeout)
        answer = _answer(client, reply_topic, deadline)
    except PublishRefused as exc:
        print(f"pidaemon nodes forget: {exc} (may this broker user publish on {command_topic}? "
              f"see config/mosquitto.acl)", file=sys.stderr)
        return EXIT_BROKER
    except BrokerError as exc:
        print(f"pidaemon nodes forget: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except KeyboardInterrupt:
        interrupted = True
        print("pidaemon nodes forget: interrupted; the command may have reached the server already", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close(wait=not interrupted)
    if answer is None:
        print(f"pidaemon nodes forget: no answer on {reply_topic} within {args.timeout:g} s: is a server with the "
              f"registry plugin running, and may this broker user publish on {command_topic} (see "
              f"config/mosquitto.acl)?", file=sys.stderr)
        return EXIT_NO_ANSWER
    if args.json:
        print(json.dumps(answer))
    else:
        print(_describe(answer))
    return EXIT_OK if not answer["refused"] and not answer["unknown"] else EXIT_NOT_ALL


def _answer(client: CliClient, reply_topic: str, deadline: float) -> dict[str, Any] | None:
    """The server's answer, or None when none came before `deadline`."""
    from .bus import Message

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        event = client.next_event(remaining)
        if isinstance(event, Message) and event.topic == reply_topic:
            answer = _parse_answer(event.payload)
            if answer is not None:
                return answer


def _parse_answer(payload: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    forgotten, refused, unknown = answer.get("forgotten"), answer.get("refused"), answer.get("unknown")
    if not (isinstance(forgotten, list) and isinstance(refused, dict) and isinstance(unknown, list)):
        return None
    return {"server": answer.get("server"), "forgotten": [str(n) for n in forgotten],
            "refused": {str(n): str(reason) for n, reason in refused.items()}, "unknown": [str(n) for n in unknown]}


def _describe(answer: dict[str, Any]) -> str:
    lines = [f"forgot {node}" for node in answer["forgotten"]]
    for node, reason in answer["refused"].items():
        hint = ": not forgotten (--force to forget it anyway)" if reason == "online" else ": not forgotten"
        lines.append(f"{node} is {reason}{hint}")
    lines += [f"{node}: not in the registry of server {answer['server']}" for node in answer["unknown"]]
    return "\n".join(lines)
