"""The Warble service: programs from anyone, queued on the server and run on the workers.

Plugins (entry points in pyproject.toml):
- `warble_server` (`server.py`): intake (the envelope: `submission.py`; reply
  topics: `reply_topics.py`; re-submissions: `repeat_answers.py`), the
  persistent queue (`jobqueue.py`), the choice of a worker
  (`worker_choice.py`), results, SAVE/LOAD storage (`store_service.py`, a
  run's SAVEs applied with its result: `job_values.py`), damaged state files
  (`recovery.py`) and the pi leaderboard (`leaderboard.py`);
- `warble_worker` (`worker.py`): runs jobs in the sandboxed runner;
- `warble_http` (`http_api.py`): the HTTP API (`openapi.yaml`): routes served
  by the node's `http` plugin (`pidaemon.http`);
- `mastodon_feed` (`mastodon_feed.py`): posts from a hashtag timeline.

The service's own hooks (`pidaemon_warble_builtins`, `pidaemon_warble_intake`)
are declared in `hookspecs.py` and called through `WarbleHooks`.
"""
