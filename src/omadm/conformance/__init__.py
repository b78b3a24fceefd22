"""The conformance and interoperability suite: a catalogue of test cases and two runners.

``omadm conformance device`` plays a DM server against a device under test;
``omadm conformance server`` plays a device against a DM server under test. The
catalogue (:mod:`omadm.conformance.model`, the cases in :mod:`omadm.conformance.cases`)
is data that the runners execute and the documents in ``docs/scomo/`` are generated from.
"""
