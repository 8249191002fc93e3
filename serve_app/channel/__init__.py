"""The token channel: replica -> router streaming with one write per engine step.

Ray streaming handles cost one message per yielded item, i.e. one per token per
request. Instead a replica appends every stream's SSE chunks for one router to
one buffer and flushes it once per event-loop turn over a plain TCP connection;
the router demultiplexes frames into per-request inboxes. The request itself
still travels through Serve's DeploymentHandle, so routing, autoscaling,
back-pressure and cancellation remain Serve's.

The admission link uses the same framing between each router and the
AdmissionController (`admission_link` is the router's end, `admission_server`
the controller's): one admit costs a frame each way instead of a Serve call.
"""
