"""`pidaemon submit 'SOURCE'`: send a Warble program to the cluster over MQTT and show the result.

The job id is chosen here, so the client subscribes to
`<prefix>/warble/results/<id>` before it submits and cannot miss the answer.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import uuid

import paho.mqtt.client as mqtt

from .config import parse_broker_url

EXIT_OK, EXIT_PROGRAM_FAILED, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 3, 2


def add_commands(subparsers) -> None:
    submit = subparsers.add_parser("submit", help="submit a Warble program to the cluster")
    submit.add_argument("source", help="the program, e.g. 'PRINT(1)' or '#pi{PRINT(1)}'")
    submit.add_argument("--user", default="anonymous")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print its output")
    submit.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL")
    submit.add_argument("--prefix", default="picluster")
    submit.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1",
                        help="MQTT version (3.1.1 works with every broker, the embedded one included)")
    submit.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    submit.add_argument("--json", action="store_true", help="print the answers as JSON lines")
    submit.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        print(f"--broker {args.broker}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    job_id = uuid.uuid4().hex[:16]
    results_topic = f"{args.prefix}/warble/results/{job_id}"
    answers: queue.Queue = queue.Queue()
    subscribed = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"submit-{job_id}",
                         protocol=mqtt.MQTTv5 if args.protocol == "5" else mqtt.MQTTv311)
    if broker.tls:
        client.tls_set()
    def on_message(client, userdata, message):
        # Some brokers (amqtt) also hand over retained messages of other topics: keep ours only.
        if message.topic == results_topic:
            answers.put(message.payload)

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.put(True)
    client.on_connect = lambda c, u, f, reason, p: c.subscribe(results_topic, 1) if not reason.is_failure else None
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        print(f"cannot reach broker {broker}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    client.loop_start()
    try:
        subscribed.get(timeout=args.timeout)
        request = {"id": job_id, "user": args.user, "source": args.source}
        client.publish(f"{args.prefix}/warble/submit", json.dumps(request), qos=1).wait_for_publish(args.timeout)
        while True:
            try:
                answer = json.loads(answers.get(timeout=args.timeout))
            except json.JSONDecodeError as exc:
                print(f"ignored a malformed answer on {results_topic}: {exc}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(answer))
            if answer.get("status") == "queued":
                if not args.json:
                    print(f"queued as {job_id}", file=sys.stderr)
                if args.wait:
                    continue
                return EXIT_OK
            return show_result(answer, args.json)
    except queue.Empty:
        print(f"no answer from the cluster within {args.timeout:g} s (is a server running "
              f"with the warble_server plugin, prefix {args.prefix!r}?)", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        client.loop_stop()
        client.disconnect()


def show_result(answer: dict, as_json: bool) -> int:
    if not as_json:
        for line in answer.get("output") or []:
            print(line)
        error = answer.get("error")
        if error:
            where = f"line {error['line']}, column {error['column']}: " if error.get("line") else ""
            print(f"{answer.get('status')}: {where}{error.get('message')}", file=sys.stderr)
        elif answer.get("status") != "ok":
            print(answer.get("status"), file=sys.stderr)
    return EXIT_OK if answer.get("status") == "ok" else EXIT_PROGRAM_FAILED
