"""
The shared test helpers that have behaviour of their own: the scripted peer.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ..support import Expect, ScriptedPeer


class ScriptedPeerTests(SynchronousTestCase):
    """
    ``ScriptedPeer`` answers the listed requests in order and reports
    anything else.
    """

    def test_answers_in_order(self) -> None:
        """
        Each expected request gets its scripted answer; a body given as
        ``None`` accepts any bytes; headers are matched as a subset.
        """
        peer = ScriptedPeer([
            Expect("PUT", "http://s3.test/bucket/part", status=200,
                   answer_headers={b"ETag": b'"abc"'}, data=None,
                   params={b"n": [b"1"]}, headers={b"content-length": [b"5"]}),
            Expect("GET", "http://s3.test/bucket/object", status=404, body=b"gone"),
        ])
        with peer.consumed(self.fail):
            put = peer.treq.put("http://s3.test/bucket/part", params={"n": "1"}, data=b"12345")
            peer.treq.flush()
            response = self.successResultOf(put)
            self.assertEqual((response.code, response.headers.getRawHeaders(b"ETag")),
                             (200, [b'"abc"']))
            get = peer.treq.get("http://s3.test/bucket/object")
            peer.treq.flush()
            response = self.successResultOf(get)
            self.assertEqual(response.code, 404)
            self.assertEqual(self.successResultOf(response.content()), b"gone")
        self.assertEqual(peer.failures, [])

    def test_unexpected_request_is_reported(self) -> None:
        """
        A request the script does not expect is reported, and so is a step
        left unrequested.
        """
        peer = ScriptedPeer([Expect("GET", "http://peer.test/a")])
        failures: list[str] = []
        with peer.consumed(failures.append):
            peer.treq.get("http://peer.test/b")
            peer.treq.flush()
        self.assertEqual(len(peer.failures), 1)
        self.assertIn("http://peer.test/b", peer.failures[0])
        self.assertEqual(len(failures), 1)
