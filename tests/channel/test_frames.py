from serve_app.channel.frames import DATA, END, HELLO, FrameReader, encode


def test_frames_round_trip_whatever_the_read_boundaries():
    frames = [(HELLO, b"", b"token"), (DATA, b"req-1", b"data: {}\n\n"), (END, b"req-1", b"")]
    wire = b"".join(encode(*frame) for frame in frames)
    for step in (1, 3, 7, len(wire)):
        reader = FrameReader()
        decoded = []
        for start in range(0, len(wire), step):
            decoded += list(reader.feed(wire[start:start + step]))
        assert decoded == frames


def test_a_partial_frame_waits_for_the_rest():
    wire = encode(DATA, b"r", b"x" * 100)
    reader = FrameReader()
    assert list(reader.feed(wire[:50])) == []
    assert list(reader.feed(wire[50:])) == [(DATA, b"r", b"x" * 100)]
