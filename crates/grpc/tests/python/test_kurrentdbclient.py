"""The gRPC face through the PyPI client most event-sourcing Python code uses
(`kurrentdbclient`), against a real `logbook serve events`; run by scripts/kurrentdb-python.

The server's gRPC address is in LOGBOOK_GRPC_ADDR. Each test uses its own stream names, so the
tests share one server.
"""

import os
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import NotFoundError, WrongCurrentVersionError


def client() -> KurrentDBClient:
    return KurrentDBClient(uri=f"kurrentdb://{os.environ['LOGBOOK_GRPC_ADDR']}?tls=false")


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class KurrentDBClientAgainstLogbook(unittest.TestCase):
    def setUp(self) -> None:
        self.client = client()

    def tearDown(self) -> None:
        self.client.close()

    def test_one_event_appends_with_append_and_several_with_batch_append(self) -> None:
        stream = name("orders")
        first = self.client.append_to_stream(
            stream,
            events=NewEvent(type="Placed", data=b'{"n":1}'),
            current_version=StreamState.NO_STREAM,
        )
        self.assertGreater(first, 0, "a commit position, never 0")
        batch = self.client.append_to_stream(
            stream,
            events=[NewEvent(type="Paid", data=b'{"n":2}'), NewEvent(type="Shipped", data=b"{}")],
            current_version=0,
        )
        self.assertGreater(batch, first)
        events = self.client.get_stream(stream)
        self.assertEqual([e.type for e in events], ["Placed", "Paid", "Shipped"])
        self.assertEqual([e.stream_position for e in events], [0, 1, 2])
        self.assertEqual(events[2].commit_position, batch)
        self.assertEqual(events[0].content_type, "application/json")
        self.assertIsNotNone(events[0].recorded_at)

    def test_a_wrong_expected_version_is_reported_by_append_and_batch_append(self) -> None:
        stream = name("wev")
        self.client.append_to_stream(
            stream, events=NewEvent(type="A", data=b"{}"), current_version=StreamState.NO_STREAM
        )
        with self.assertRaises(WrongCurrentVersionError):
            self.client.append_to_stream(
                stream, events=NewEvent(type="B", data=b"{}"), current_version=5
            )
        with self.assertRaises(WrongCurrentVersionError):
            self.client.append_to_stream(
                stream,
                events=[NewEvent(type="B", data=b"{}"), NewEvent(type="C", data=b"{}")],
                current_version=StreamState.NO_STREAM,
            )
        self.assertEqual(len(self.client.get_stream(stream)), 1)

    def test_an_idempotent_repeat_answers_the_original_position(self) -> None:
        stream = name("idem")
        event = NewEvent(type="A", data=b"{}")
        once = self.client.append_to_stream(stream, events=event, current_version=StreamState.ANY)
        again = self.client.append_to_stream(stream, events=event, current_version=StreamState.ANY)
        self.assertEqual(once, again)

    def test_an_unknown_stream_is_not_found(self) -> None:
        with self.assertRaises(NotFoundError):
            self.client.get_stream(name("nobody"))

    def test_binary_data_and_metadata_round_trip(self) -> None:
        stream = name("blobs")
        self.client.append_to_stream(
            stream,
            events=NewEvent(
                type="Blob",
                data=bytes([0, 255, 1]),
                metadata=b'{"m":1}',
                content_type="application/octet-stream",
            ),
            current_version=StreamState.ANY,
        )
        (event,) = self.client.get_stream(stream)
        self.assertEqual(event.data, bytes([0, 255, 1]))
        self.assertEqual(event.metadata, b'{"m":1}')
        self.assertEqual(event.content_type, "application/octet-stream")

    def test_read_all_with_the_default_filter_skips_system_event_types(self) -> None:
        stream = name("all")
        self.client.append_to_stream(
            stream,
            events=[NewEvent(type="$system", data=b"{}"), NewEvent(type="Visible", data=b"{}")],
            current_version=StreamState.ANY,
        )
        mine = [e for e in self.client.read_all() if e.stream_name == stream]
        self.assertEqual([e.type for e in mine], ["Visible"])
        backwards = list(self.client.read_all(backwards=True, limit=1))
        self.assertEqual(len(backwards), 1)
        self.assertEqual(backwards[0].commit_position, self.client.get_commit_position())

    def test_streams_read_backwards(self) -> None:
        stream = name("back")
        self.client.append_to_stream(
            stream,
            events=[NewEvent(type=t, data=b"{}") for t in ["A", "B", "C"]],
            current_version=StreamState.NO_STREAM,
        )
        events = self.client.get_stream(stream, backwards=True, limit=2)
        self.assertEqual([e.type for e in events], ["C", "B"])

    def test_stream_metadata_is_written_and_read_through_the_metastream(self) -> None:
        stream = name("meta")
        self.client.append_to_stream(
            stream,
            events=[NewEvent(type=t, data=b"{}") for t in ["A", "B", "C"]],
            current_version=StreamState.NO_STREAM,
        )
        self.assertEqual(self.client.get_stream_metadata(stream), ({}, StreamState.NO_STREAM))
        self.client.set_stream_metadata(
            stream,
            metadata={"$maxCount": 2, "owner": "ops"},
            current_version=StreamState.NO_STREAM,
        )
        self.assertEqual(
            self.client.get_stream_metadata(stream), ({"$maxCount": 2, "owner": "ops"}, 0)
        )
        self.assertEqual([e.type for e in self.client.get_stream(stream)], ["B", "C"])
        with self.assertRaises(WrongCurrentVersionError):
            self.client.set_stream_metadata(
                stream, metadata={"$maxCount": 1}, current_version=StreamState.NO_STREAM
            )
        self.client.set_stream_metadata(stream, metadata={"$maxCount": 1}, current_version=0)
        self.assertEqual(self.client.get_stream_metadata(stream), ({"$maxCount": 1}, 1))
        self.assertEqual([e.type for e in self.client.get_stream(stream)], ["C"])

    def test_subscriptions_catch_up_then_follow_live(self) -> None:
        stream = name("sub")
        self.client.append_to_stream(
            stream, events=NewEvent(type="Old", data=b"{}"), current_version=StreamState.ANY
        )
        start = self.client.get_commit_position()
        with self.client.subscribe_to_all(commit_position=start - 1) as subscription:
            first = next(iter(subscription))
            self.assertEqual(first.type, "Old")
            self.client.append_to_stream(
                stream, events=NewEvent(type="New", data=b"{}"), current_version=StreamState.ANY
            )
            live = next(iter(subscription))
            self.assertEqual(live.type, "New")
        with self.client.subscribe_to_stream(stream) as subscription:
            events = iter(subscription)
            self.assertEqual([next(events).type, next(events).type], ["Old", "New"])


if __name__ == "__main__":
    unittest.main()
