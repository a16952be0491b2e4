"""Header compression contexts that exist only while blocks flow.

Each direction is one zlib stream for the whole connection, but its state is
dropped between batches (the compressor after each hand-out, the decompressor
after each chunk read) and rebuilt from the last window of history, so an idle
connection holds none. These tests pin that the rebuilt contexts continue the
very same zlib stream, in both directions, against standard zlib contexts (the
way Go's spdystream and any other SPDY peer compress and inflate), and that the
decompressor never rebuilds where it could not (not at a block boundary).
"""

from __future__ import annotations

import random
import zlib

from muxstream.protocol import (
    SPDY3_DICTIONARY,
    Connection,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    ReplyReceived,
    Role,
    StreamOpened,
    encode_header_block,
)


def kubernetes_like_headers(i: int) -> Headers:
    """Blocks that repeat (so later ones refer back) and sometimes outgrow a
    512-byte window (so references reach across a release)."""
    headers = {
        "streamtype": ["error", "stdin", "stdout", "stderr", "resize"][i % 5],
        "port": str(8000 + i % 7),
        "requestid": str(i // 5),
    }
    if i % 11 == 0:
        headers["authorization"] = "Bearer " + "abcdefgh" * (20 + i % 50)
    return Headers(headers)


def test_a_compressor_released_between_blocks_continues_one_zlib_stream() -> None:
    rng = random.Random(7)
    comp = HeaderCompressor()
    standard = zlib.decompressobj(zdict=SPDY3_DICTIONARY)  # a peer's one inflater
    ours = HeaderDecompressor()
    sizes = []
    for i in range(400):
        headers = kubernetes_like_headers(i)
        block = comp.compress(headers)
        assert comp.active
        sizes.append(len(block))
        assert standard.decompress(block) == encode_header_block(headers)
        assert ours.decompress(block) == headers
        if rng.random() < 0.6:
            comp.release()
            assert not comp.active
        if rng.random() < 0.6:
            ours.release()
    # still one context's worth of compression: repeated headers stay cheap
    assert sum(sizes[-100:]) / 100 < sizes[0] / 2


def test_a_decompressor_released_between_blocks_reads_a_32k_window_stream() -> None:
    # Go's spdystream compresses with zlib's defaults (32 KiB window): after a
    # release the decompressor must still resolve references far back.
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                            zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICTIONARY)
    dec = HeaderDecompressor()
    big = Headers({"cookie": "".join(f"{n:05d}" for n in range(3000))})  # 15 KB, unique
    big_sizes = []
    for i in range(60):
        headers = big if i % 10 == 0 else kubernetes_like_headers(i)
        raw = encode_header_block(headers)
        block = comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert dec.decompress(block) == headers
        dec.release()
        assert not dec.active
        if headers is big:
            big_sizes.append(len(block))
    # every copy after the first is mostly a reference ~15 KB back
    assert all(size < big_sizes[0] // 10 for size in big_sizes[1:])


def test_a_decompressor_keeps_its_state_after_a_block_that_ends_mid_stream() -> None:
    # A partial flush ends a block without reaching a byte-aligned block
    # boundary: the inflater cannot be rebuilt from history there, so a
    # release must keep it (else the next block would not decode).
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                            zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICTIONARY)
    dec = HeaderDecompressor()
    for i in range(30):
        headers = kubernetes_like_headers(i)
        raw = encode_header_block(headers)
        flush = zlib.Z_PARTIAL_FLUSH if i % 2 else zlib.Z_SYNC_FLUSH
        block = comp.compress(raw) + comp.flush(flush)
        assert dec.decompress(block) == headers
        dec.release()
        assert dec.active == (flush == zlib.Z_PARTIAL_FLUSH)


def test_an_idle_connection_holds_no_zlib_state() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    for i in range(3):
        sid = client.open_stream({"streamtype": "stdin", "n": str(i)})
        (opened,) = [e for e in server.receive_data(client.data_to_send())
                     if isinstance(e, StreamOpened)]
        assert opened.headers["n"] == str(i)
        server.send_reply(sid, {"n": str(i)})
        (reply,) = [e for e in client.receive_data(server.data_to_send())
                    if isinstance(e, ReplyReceived)]
        assert reply.headers["n"] == str(i)
        for conn in (client, server):
            assert not conn._out.compressor.active
            assert not conn._decompressor.active
