"""`pidaemon submit 'SOURCE'`: send a Warble program to the cluster over MQTT and show the result.

The job id is chosen here (or given with `--id`), so the client subscribes to
`<prefix>/warble/results/<id>` before it submits and cannot miss the answer.
In order:

- connect: an unreachable broker, or one that refuses the MQTT version, is
  reported at once (exit 4);
- subscribe to the job's results, to a reply topic of its own
  (`<prefix>/replies/<client id>`, which the submission names as `reply_to`:
  a submission refused before it gets its id is answered there), to the
  retained registry and the nodes' status topics (is a server running? how many
  workers can run Warble?) and, with `--wait`, to the workers' replies
  `<prefix>/nodes/+/reply/warble` (where the job runs; a broker ACL may forbid
  it, and then "running on NODE" is not shown);
- publish the submission at QoS 1 and, until the server acknowledges it,
  publish it again every few seconds and after every reconnection, with the
  same id (the server queues a job once per id), each time with a
  `warble/history` request: the server answers a repeated id with nothing, so
  the history tells the job's state when an acknowledgement was lost;
- give up within `NO_SERVER_GRACE` seconds when no server is running (no
  registry, or its server offline or silent), else at `--timeout`.

Progress goes to standard error, the program's output to standard output.
Exit status: 0 the program ran fine (or, without --wait, was queued); 1 it
failed or was rejected; 2 a usage error; 3 no answer or no result in time, or
no server; 4 the broker cannot be used (unreachable, silent, refused the
connection or the MQTT version); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from .cli_client import (BrokerError, CliClient, ConnectionChange, UsageError, add_connection_arguments,
                         settings_from_args)
from .status_cli import STALE_AFTER, ClusterView, ago
from .topics import Topics

if TYPE_CHECKING:  # pragma: no cover  (the bus imports paho: not needed to build the command line)
    from .bus import Message

EXIT_OK, EXIT_PROGRAM_FAILED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_BROKER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
CONNECT_TIMEOUT = 5.0   # seconds for the broker to accept the connection and the subscriptions (at most --timeout)
PUBACK_TIMEOUT = 5.0    # seconds for the broker to acknowledge a submission before the next retry
NO_SERVER_GRACE = 3.0   # seconds without an acknowledgement and without a live server before giving up
RETRY_FIRST, RETRY_MAX = 2.0, 8.0  # seconds before the first re-submission, doubling up to the second
WAITING = ("queued", "dispatched", "running")  # a job's states before its result


def _job_id(text: str) -> str:
    if not 0 < len(text) <= 64 or any(c in text for c in "/+#\0"):
        raise argparse.ArgumentTypeError("an id is 1-64 letters, digits, '_', '-' or '.'")
    return text


def add_commands(subparsers) -> None:
    submit = subparsers.add_parser(
        "submit", help="submit a Warble program to the cluster",
        epilog="exit status: 0 ok (without --wait: queued), 1 the program failed or was rejected, 2 usage, "
               "3 no answer or no result in time, or no server, 4 the broker cannot be used, 130 interrupted")
    submit.add_argument("source", help="the program, e.g. 'PRINT(1)' or '#pi{PRINT(1)}'")
    submit.add_argument("--user", default="anonymous")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print its output")
    submit.add_argument("--id", type=_job_id, metavar="ID",
                        help="the job's id (default: a new one); submitting an id again never runs it twice, "
                             "and with --wait shows that job's result")
    add_connection_arguments(submit)
    submit.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="seconds to wait for the acknowledgement, then (--wait) for the result (default 60)")
    submit.add_argument("--json", action="store_true", help="print the answers as JSON lines")
    submit.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    return Submission(args).run()


class Submission:
    """One submission, from the connection to the result (or to why there is none)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.job_id: str = args.id or uuid.uuid4().hex[:16]
        self.topics = Topics(args.prefix)
        self.client_id = f"pidaemon-submit-{os.urandom(4).hex()}"
        self.results_topic = self.topics.join("warble", "results", self.job_id)
        self.reply_topic = self.topics.join("replies", self.client_id)
        self.workers_topic = self.topics.reply("+", "warble")
        self.view = ClusterView(self.topics)
        self.client: CliClient | None = None
        self.answered = False              # the server acknowledged (or answered) the submission
        self.shown: tuple[str, str | None] | None = None   # the last progress shown: (state, node)
        self.printed_json: set[str] = set()
        self.no_server_since: float | None = None
        self.deadline = 0.0

    @property
    def broker(self) -> str:
        return self.client.settings.broker.url if self.client else self.args.broker

    # ------------------------------------------------------------ the command

    def run(self) -> int:
        try:
            settings = settings_from_args(self.args, self.client_id)
        except UsageError as exc:
            self._say(str(exc))
            return EXIT_USAGE
        self.client = CliClient(settings)
        interrupted = False
        try:
            return self._run()
        except KeyboardInterrupt:
            interrupted = True
            self._say(self._interrupted())
            return EXIT_INTERRUPTED
        except BrokerError as exc:
            self._say(str(exc))
            return EXIT_BROKER
        finally:
            self.client.close(wait=not interrupted)

    def _run(self) -> int:
        from .bus import Subscription

        args, client = self.args, self.client
        connect_timeout = min(args.timeout, CONNECT_TIMEOUT)
        client.connect(connect_timeout)
        subscriptions = [Subscription(self.results_topic), Subscription(self.reply_topic),
                         Subscription(self.topics.join("registry"), qos=0),
                         Subscription(self.topics.status("+"), qos=0)]
        if args.wait:
            subscriptions.append(Subscription(self.workers_topic, qos=0))
        refused = client.subscribe(subscriptions, connect_timeout)
        if self.results_topic in refused:
            raise BrokerError(f"the broker {self.broker} refused the subscription to {self.results_topic}: "
                              f"the result could not be received")
        now = time.monotonic()
        self.deadline = now + args.timeout
        self.no_server_since = now
        self._send(history=False)
        retry_delay, next_retry = RETRY_FIRST, now + RETRY_FIRST
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                return self._timed_out()
            wake = [self.deadline]
            if not self.answered:
                if self.no_server_since is not None and now - self.no_server_since >= NO_SERVER_GRACE \
                        and client.connected:
                    self._say(self._no_server())
                    return EXIT_NO_ANSWER
                if now >= next_retry:
                    self._send(history=True)
                    retry_delay = min(retry_delay * 2, RETRY_MAX)
                    next_retry = time.monotonic() + retry_delay
                wake.append(next_retry)
                if self.no_server_since is not None:
                    wake.append(self.no_server_since + NO_SERVER_GRACE)
            event = client.next_event(min(wake) - time.monotonic())
            if event is not None:
                code = self._handle(event)
                if code is not None:
                    return code

    def _send(self, history: bool) -> None:
        """The submission (again), and with `history` a question for the job's state; not while disconnected."""
        if not self.client.connected:
            return  # the reconnection sends it
        request = {"id": self.job_id, "user": self.args.user, "source": self.args.source,
                   "reply_to": self.reply_topic}
        timeout = max(0.1, min(PUBACK_TIMEOUT, self.deadline - time.monotonic()))
        self.client.publish(self.topics.join("warble", "submit"), request, timeout)
        if history:
            self.client.publish(self.topics.join("warble", "history"),
                                {"user": self.args.user, "reply_to": self.reply_topic}, timeout)

    # ------------------------------------------------------------ what arrives

    def _handle(self, event: Message | ConnectionChange) -> int | None:
        from .bus import topic_matches

        if isinstance(event, ConnectionChange):
            if not event.up:
                self._say(f"lost the connection to the broker {self.broker}; reconnecting")
                self.no_server_since = None  # a broker away says nothing about the server
                return None
            self._say("connected again")
            # The broker may have restarted: what it retained, and our answer, may be gone.
            self.no_server_since = None if self.answered else time.monotonic()
            self._send(history=True)
            return None
        if event.topic in (self.results_topic, self.reply_topic):
            return self._on_answer_message(event)
        if topic_matches(self.workers_topic, event.topic):
            self._on_worker_reply(event)
            return None
        self.view.handle(event)
        self._follow_server()
        self._follow_worker()
        return None

    def _on_answer_message(self, message: Message) -> int | None:
        from .bus import PayloadError

        try:
            data = message.json()
        except PayloadError as exc:
            self._say(f"ignored an answer: {exc}")
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("jobs"), list):  # the answer to a history request
            job = next((j for j in data["jobs"] if isinstance(j, dict) and j.get("id") == self.job_id), None)
            return None if job is None else self._on_answer(_answer_of(job))
        # Refused before it got our id (user name, length): that answer carries another id, on our reply topic.
        refused_before = message.topic == self.reply_topic and data.get("status") == "rejected"
        if data.get("id") != self.job_id and not refused_before:
            return None
        return self._on_answer(data)

    def _on_answer(self, answer: dict[str, Any]) -> int | None:
        status = answer.get("status")
        first = not self.answered
        self.answered = True
        if self.args.json and str(status) not in self.printed_json:
            self.printed_json.add(str(status))
            print(json.dumps(answer), flush=True)
        if status not in WAITING:
            return show_result(answer, _program(self.args.source), self.args.json)
        if first:
            self.no_server_since = None
            self.deadline = time.monotonic() + self.args.timeout  # now for the result
        if not self.args.wait:
            self._say(self._queued() if status == "queued" else
                      f"queued as {self.job_id}, now {'sent to' if status == 'dispatched' else 'running on'} "
                      f"{answer.get('node')}")
            return EXIT_OK
        self._progress(status, answer.get("node"))
        return None

    def _on_worker_reply(self, message: Message) -> None:
        from .bus import PayloadError

        try:
            reply = message.json()
        except PayloadError:
            return
        if isinstance(reply, dict) and reply.get("id") == self.job_id and reply.get("state") == "running":
            self._progress("running", str(reply.get("node") or message.topic.split("/")[-3]))

    def _follow_server(self) -> None:
        """Start (or stop) the no-server clock from what the registry and the status topics say."""
        if self.answered:
            return
        if self.view.server_state(STALE_AFTER).is_current(time.time()):
            self.no_server_since = None
        elif self.no_server_since is None:
            self.no_server_since = time.monotonic()

    def _follow_worker(self) -> None:
        """A job's worker that leaves: the server gives the job to another one."""
        if not self.shown or self.shown[0] not in ("running", "dispatched") or not self.view.registry:
            return
        node = self.shown[1]
        record = self.view.registry["nodes"].get(node) if node else None
        if isinstance(record, dict) and record.get("state") in ("offline", "unhealthy"):
            self._say(f"worker {node} is {record['state']}: the server queues the job again")
            self.shown = ("queued", None)

    # ------------------------------------------------------------ what is said

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _progress(self, state: str, node: str | None) -> None:
        if self.shown == (state, node) or (state == "queued" and self.shown and self.shown[0] != "queued"):
            return  # said already; a late "queued" does not undo "running"
        if self.shown is None and state != "queued":
            self._say(f"queued as {self.job_id}")
        self.shown = (state, node)
        if state == "queued":
            self._say(self._queued())
        elif state == "dispatched":
            self._say(f"sent to {node}")
        else:
            self._say(f"running on {node}" if node else "running")

    def _workers(self) -> tuple[int, dict[str, int]]:
        """Workers able to run Warble in the registry: how many online, and how many in each state."""
        states: dict[str, int] = {}
        for record in ((self.view.registry or {}).get("nodes") or {}).values():
            if isinstance(record, dict) and "warble" in (record.get("capabilities") or []):
                states[record.get("state", "unknown")] = states.get(record.get("state", "unknown"), 0) + 1
        return states.get("online", 0), states

    def _queued(self) -> str:
        if self.view.registry is None:
            return f"queued as {self.job_id}"
        online, states = self._workers()
        if online:
            return f"queued as {self.job_id} ({online} worker{'s' if online != 1 else ''} able to run Warble online)"
        server = self.view.server_state(STALE_AFTER)
        known = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        knows = f"knows {sum(states.values())} such worker{'s' if sum(states.values()) != 1 else ''}: {known}" \
            if states else "knows no such worker"
        return (f"queued as {self.job_id}, waiting for a worker: no worker able to run Warble is online "
                f"(server {server.server} is {server.status or 'without a status'}; its registry, updated "
                f"{ago(server.updated, time.time())}, {knows}); the job runs when one comes online")

    def _no_server(self) -> str:
        server = self.view.server_state(STALE_AFTER)
        registry = self.topics.join("registry")
        if server.server is None:
            why = (f"nothing is retained on {registry} at {self.broker}, so no server (plugins "
                   f"registry and warble_server) has run there with prefix {self.args.prefix!r}")
        else:
            why = server.problem(time.time()) or f"server {server.server} did not answer"
        return (f"no server is running: {why}\nsubmission {self.job_id} was not acknowledged; start the server and "
                f"submit again (with --id {self.job_id} it is queued at most once)")

    def _timed_out(self) -> int:
        timeout = f"{self.args.timeout:g} s"
        if not self.client.connected:
            self._say(f"no {'result' if self.answered else 'answer'} within {timeout}: the connection to the broker "
                      f"{self.broker} was lost and could not be made again"
                      + (f"; job {self.job_id} stays on the server" if self.answered else ""))
            return EXIT_NO_ANSWER
        if not self.answered:
            server = self.view.server_state(STALE_AFTER)
            if not server.is_current(time.time()):
                self._say(self._no_server())
            else:
                self._say(f"no answer from the cluster within {timeout}: server {server.server} is online but did "
                          f"not acknowledge submission {self.job_id} (is its warble_server plugin running, with "
                          f"prefix {self.args.prefix!r}?)")
            return EXIT_NO_ANSWER
        state, node = self.shown or ("queued", None)
        if state == "queued":
            online, _ = self._workers()
            where = "still queued" + (": no worker able to run Warble is online" if self.view.registry and not online
                                      else "")
        else:
            where = f"{'sent to' if state == 'dispatched' else 'running on'} {node}"
        self._say(f"no result within {timeout}: job {self.job_id} is {where}; it stays on the server "
                  f"(submit with --id {self.job_id} --wait to see its result later)")
        return EXIT_NO_ANSWER

    def _interrupted(self) -> str:
        if self.answered:
            return f"interrupted; job {self.job_id} stays on the server (submit with --id {self.job_id} to follow it)"
        return f"interrupted before the cluster acknowledged submission {self.job_id}"


def _answer_of(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the history lists it, in the shape of the server's answers on warble/results/<id>."""
    result = job.get("result")
    if isinstance(result, dict):
        return {"id": job.get("id"), "user": job.get("user"), **result,
                "status": result.get("status", job.get("state"))}
    return {"id": job.get("id"), "user": job.get("user"), "status": job.get("state"), "node": job.get("node")}


def _program(source: str) -> str:
    """The program the server runs: inside `#pi{...}` for a post (error positions are in it)."""
    from .warble.posts import NoWarble, program_of

    try:
        return program_of(source)
    except NoWarble:
        return source


def show_result(answer: dict, source: str, as_json: bool) -> int:
    """Print a result's output, and its error with the source line and a caret under the column."""
    status = answer.get("status")
    if not as_json:
        from .warble.cli import format_error
        from .warble.errors import ErrorInfo

        for line in answer.get("output") or []:
            print(line)
        error = answer.get("error")
        if isinstance(error, dict):
            line, column = error.get("line"), error.get("column")
            position = (line, column) if isinstance(line, int) and isinstance(column, int) else (None, None)
            label = "error" if status == "error" else str(status)
            print(format_error(source, ErrorInfo(str(error.get("message")), *position), label), file=sys.stderr)
        elif status != "ok":
            print(status, file=sys.stderr)
    return EXIT_OK if status == "ok" else EXIT_PROGRAM_FAILED
