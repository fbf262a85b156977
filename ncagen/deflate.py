"""The size of zlib's gzip output for a buffer, computed without compressing it.

The data contract's gzip ratio needs only `len(gzip.compress(data, 9))`, never the bytes. zlib
spends about half of each call on work the size does not need: it allocates and clears its
tables, and it writes every code bit by bit. This module redoes only what decides the size, and
does it for a whole batch in one compiled call:

1. zlib's lazy LZ77 parse (deflate.c, `deflate_slow` and `longest_match`), step for step: the same
   hash, the same chain walk with the same early exits, the same tie-breaks (the most recent of
   the longest matches), the same quirks (no match against position 0; a 3-byte match further
   than 4,096 bytes back dropped; the chain cut to a quarter after a good match). Only the
   symbol counts are kept.
2. zlib's Huffman code lengths (trees.c, `build_tree`, `gen_bitlen` with its length-limit repair,
   `scan_tree`, `build_bl_tree`), node for node, since the block header's size depends on which
   of several equally good trees zlib picks.
3. zlib's choice of block type (stored, fixed or dynamic codes) from those bit counts, and the
   gzip member's 10-byte header and 8-byte trailer.

Given a band, a row whose size bounds put it outside the band skips step 2, and a row the
bounds of its first symbols already put above or below the band stops its parse there.

The result is exactly zlib's size, not an estimate: `tests/test_deflate.py` compares them on real
candidates of several alphabets and on adversarial buffers, and `benchmarks/bench_deflate.py`
on millions of candidates. It covers what a single deflate block with no window slide can hold
(levels 4-9, the lazy parse, and 1 to MAX_EXACT bytes); anything else goes to zlib itself.

The zlib it reproduces is the reference one (madler's zlib, whose deflate output has been the
same since 1.2.x; checked against 1.2.13). Forks that compress differently (zlib-ng, the
Cloudflare or Intel builds) give other sizes for the same data; ncagen's ratios do not follow
them, so rows do not depend on which zlib a machine has.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from .jit import njit

MAX_EXACT = 16_382  # bytes: up to here zlib (memLevel 8) makes one block, never sliding its window
GZIP_FRAMING = 18  # the gzip member's header (10 bytes, no name) and trailer (CRC32, length)

# zlib's configuration table for the levels that use the lazy parse: (good_length, max_lazy,
# nice_length, max_chain).
LAZY_LEVELS = {4: (4, 4, 16, 16), 5: (8, 16, 32, 32), 6: (8, 16, 128, 128),
               7: (8, 32, 128, 256), 8: (32, 128, 258, 1024), 9: (32, 258, 258, 4096)}


def _tables() -> dict[str, np.ndarray]:
    """The fixed tables of the deflate format (RFC 1951) in the form the kernel reads them."""
    len_base = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                99, 115, 131, 163, 195, 227, 258]
    len_extra = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]
    dist_base = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    dist_extra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
                  12, 12, 13, 13]
    # The length code of each match length 3..258; 258 has two encodings and zlib uses code 285.
    length_code = np.array([max(c for c in range(28) if len_base[c] <= length)
                            for length in range(3, 259)], np.int64)
    length_code[255] = 28
    # The distance code of each distance 1..32768 (zlib's d_code of distance - 1).
    distance = np.arange(1, 32769)
    dist_code = (np.searchsorted(np.array(dist_base), distance, side="right") - 1).astype(np.int64)
    static_lit = np.array([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8, np.int64)  # 288 codes
    return {
        "length_code": length_code,
        "dist_code": dist_code,
        "lit_extra": np.array(len_extra, np.int64),  # by length code - 257
        "dist_extra": np.array(dist_extra, np.int64),
        "bl_extra": np.array([0] * 16 + [2, 3, 7], np.int64),
        "bl_order": np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15],
                             np.int64),
        "static_lit": static_lit,
        "static_dist": np.full(30, 5, np.int64),
    }


def gzip_sizes(raw: np.ndarray, level: int = 9, band: tuple[float, float] = (0.0, 1.0)
               ) -> np.ndarray:
    """len(gzip.compress(row, level)) of each row of raw (B, L) uint8, as int64.

    Given a band (lo, hi) other than (0, 1), a row whose ratio (size / L) a bound puts surely
    outside it (at or beyond an edge) may get -1 instead of its size, at a fraction of the cost."""
    raw = np.ascontiguousarray(raw, np.uint8)
    B, L = raw.shape
    if level not in LAZY_LEVELS or not 1 <= L <= MAX_EXACT:
        return np.array([len(zlib.compress(raw[b].tobytes(), level, 31)) for b in range(B)],
                        np.int64)
    out = np.empty(B, np.int64)
    params = np.array(LAZY_LEVELS[level], np.int64)
    _sizes(raw, params, np.array(band, np.float64), out, *_tables_cached())
    return out


@functools.lru_cache(maxsize=None)
def _tables_cached() -> tuple:
    t = _tables()
    return (t["length_code"], t["dist_code"], t["lit_extra"], t["dist_extra"], t["bl_extra"],
            t["bl_order"], t["static_lit"], t["static_dist"])


HEAP_SIZE = 573  # 2 * 286 + 1: zlib's heap, shared by the three trees
NODE_BITS = 10  # a heap entry packs its node (< HEAP_SIZE) under its key
NODE_MASK = (1 << NODE_BITS) - 1
SENTINEL = 1 << 62  # a key above any: the empty slot after the heap's last entry
MAX_DIST = 32768 - 262  # the window minus MIN_LOOKAHEAD
TOO_FAR = 4096
EARLY_CHECK = 48  # bytes parsed between two checks of the band bound during the parse


@njit(inline="always")
def downheap(heap, heap_len, k):  # pragma: no cover - compiled
    """zlib's pqdownheap on packed entries, key << NODE_BITS | node, key = freq << 9 | depth:
    comparing the keys (entry >> NODE_BITS) orders nodes as zlib's `smaller` does (by
    frequency, then depth), equal keys left to the heap's positions as in zlib. heap[heap_len +
    1] must hold SENTINEL, so the right child needs no bounds check (it never wins there), and
    heap must reach 2 * heap_len + 3: each level reads its grandchildren while it compares."""
    v = heap[k]
    kv = v >> NODE_BITS
    j = k << 1
    a, b = heap[j], heap[j + 1]  # the children
    while j <= heap_len:
        g0, g1, g2, g3 = heap[2 * j], heap[2 * j + 1], heap[2 * j + 2], heap[2 * j + 3]
        c = np.int64((b >> NODE_BITS) <= (a >> NODE_BITS))  # zlib takes the right on a tie
        j += c  # the child picked without a branch: which one is a coin toss, mispredicted
        hj = a + c * (b - a)
        if kv <= (hj >> NODE_BITS):
            break
        heap[k] = hj  # k < j: never one of the grandchildren read above
        k = j
        j <<= 1
        a = g0 + c * (g2 - g0)  # its children, read before the choice: no wait on a load
        b = g1 + c * (g3 - g1)
    heap[k] = v

@njit(inline="always")
def build_tree(freq, length, dad, elems, stree, extra, base, max_length, heap,
               bl_count):  # pragma: no cover - compiled
    """zlib's build_tree + gen_bitlen: code lengths into `length`; returns (max_code, the
    bits of the data in these codes, the bits in the fixed codes)."""
    opt = 0
    stat = 0
    heap_len, heap_max, max_code = 0, HEAP_SIZE, -1
    for n in range(elems):
        if freq[n] != 0:
            heap_len += 1
            heap[heap_len] = (freq[n] << (9 + NODE_BITS)) | n
            max_code = n
        else:
            length[n] = 0
    while heap_len < 2:  # deflate needs two codes at least: zlib adds dummies
        if max_code < 2:
            max_code += 1
            node = max_code
        else:
            node = 0
        heap_len += 1
        heap[heap_len] = (1 << (9 + NODE_BITS)) | node
        freq[node] = 1
        opt -= 1
        if stree.shape[0]:
            stat -= stree[node]
    heap[heap_len + 1] = SENTINEL
    for k in range(heap_len // 2, 0, -1):
        downheap(heap, heap_len, k)
    node = elems
    while True:
        pn = heap[1]
        heap[1] = heap[heap_len]
        heap[heap_len] = SENTINEL
        heap_len -= 1
        downheap(heap, heap_len, 1)
        pm = heap[1]
        n = pn & NODE_MASK
        m = pm & NODE_MASK
        heap_max -= 1
        heap[heap_max] = n
        heap_max -= 1
        heap[heap_max] = m
        f = freq[n] + freq[m]
        freq[node] = f
        depth = max((pn >> NODE_BITS) & 511, (pm >> NODE_BITS) & 511) + 1
        dad[n] = node
        dad[m] = node
        heap[1] = (((f << 9) | depth) << NODE_BITS) | node
        node += 1
        downheap(heap, heap_len, 1)
        if heap_len < 2:
            break
    heap_max -= 1
    heap[heap_max] = heap[1] & NODE_MASK  # the root
    # gen_bitlen: lengths from the root down, capped at max_length, then repaired
    bl_count[:] = 0
    length[heap[heap_max]] = 0
    overflow = 0
    for h in range(heap_max + 1, HEAP_SIZE):
        n = heap[h]
        bits = length[dad[n]] + 1
        if bits > max_length:
            bits = max_length
            overflow += 1
        length[n] = bits
        if n > max_code:
            continue
        bl_count[bits] += 1
        xbits = extra[n - base] if n >= base else 0
        opt += freq[n] * (bits + xbits)
        if stree.shape[0]:
            stat += freq[n] * (stree[n] + xbits)
    if overflow:
        while overflow > 0:
            bits = max_length - 1
            while bl_count[bits] == 0:
                bits -= 1
            bl_count[bits] -= 1
            bl_count[bits + 1] += 2
            bl_count[max_length] -= 1
            overflow -= 2
        h = HEAP_SIZE
        for bits in range(max_length, 0, -1):
            count = bl_count[bits]
            while count != 0:
                h -= 1
                m = heap[h]
                if m > max_code:
                    continue
                if length[m] != bits:
                    opt += (bits - length[m]) * freq[m]
                    length[m] = bits
                count -= 1
    return max_code, opt, stat

@njit(inline="always")
def scan_tree(length, max_code, bl_freq):  # pragma: no cover - compiled
    """zlib's scan_tree: count the code-length symbols that will describe a tree."""
    prevlen, nextlen, count = -1, length[0], 0
    max_count, min_count = (138, 3) if nextlen == 0 else (7, 4)
    length[max_code + 1] = 0xFFFF  # guard
    for n in range(max_code + 1):
        curlen = nextlen
        nextlen = length[n + 1]
        count += 1
        if count < max_count and curlen == nextlen:
            continue
        if count < min_count:
            bl_freq[curlen] += count
        elif curlen != 0:
            if curlen != prevlen:
                bl_freq[curlen] += 1
            bl_freq[16] += 1
        elif count <= 10:
            bl_freq[17] += 1
        else:
            bl_freq[18] += 1
        count = 0
        prevlen = curlen
        if nextlen == 0:
            max_count, min_count = 138, 3
        elif curlen == nextlen:
            max_count, min_count = 6, 3
        else:
            max_count, min_count = 7, 4

@njit
def _sizes(raw, params, band, out, length_code, dist_code, lit_extra, dist_extra, bl_extra,
          bl_order, static_lit, static_dist):  # pragma: no cover - compiled
    good, max_lazy, nice_length, max_chain = params[0], params[1], params[2], params[3]
    B, L = raw.shape
    win = np.zeros(L + 258 + 8, np.uint8)  # zlib zeroes the 258 bytes after the data
    head = np.zeros(32768, np.int32)  # the newest position of each hash; 0: none
    prev = np.zeros(L, np.int32)  # the position before each on its hash chain
    count = np.zeros(32768, np.int32)  # positions on each chain, position 0 included
    head4 = np.zeros(65536, np.int32)  # the same for the first four bytes (a sub-chain)
    prev4 = np.zeros(L, np.int32)
    hash3 = np.zeros(L + 1, np.int32)  # hash of the 3 bytes at each position (zero padded)
    hash4 = np.zeros(L + 1, np.int32)
    trees = np.zeros((9, HEAP_SIZE), np.int64)  # frequencies, code lengths, parents of each tree:
    lfreq, llen, ldad = trees[0], trees[1], trees[2]  # literals and lengths
    dfreq, dlen, ddad = trees[3], trees[4], trees[5]  # distances
    bfreq, blen, bdad = trees[6], trees[7], trees[8]  # the code lengths of those two
    heap = np.zeros(HEAP_SIZE + 3, np.int64)  # + 3: the grandchildren downheap reads ahead
    bl_count = np.zeros(16, np.int64)
    no_stree = np.zeros(0, np.int64)
    flogf = np.zeros(L + 2, np.float64)  # f * log2(f), for the entropy bound
    for f in range(2, L + 2):
        flogf[f] = f * np.log2(np.float64(f))
    lo, hi = band[0], band[1]
    bounded = lo > 0.0 or hi < 1.0
    early = hi < 1.0  # the parse may stop once the row is surely above the band
    early_low = lo > 0.0  # or surely below it
    track = early or early_low
    for b in range(B):
        win[:L] = raw[b]
        for p in range(L + 1):  # every position's hashes, in one pass that vectorises
            hash3[p] = ((np.int32(win[p]) << 10) ^ (np.int32(win[p + 1]) << 5)
                        ^ np.int32(win[p + 2])) & 0x7FFF  # zlib's: 15 bits, shift 5
            v = (np.int64(win[p]) | (np.int64(win[p + 1]) << 8) | (np.int64(win[p + 2]) << 16)
                 | (np.int64(win[p + 3]) << 24))
            hash4[p] = ((v * 2654435761) & 0xFFFFFFFF) >> 16  # any 16-bit hash: bytes are checked
        lfreq[:] = 0
        dfreq[:] = 0
        bfreq[:] = 0
        lfreq[256] = 1  # the end-of-block code
        # -- the lazy parse of deflate_slow (the helpers written out: numba would count
        # references on every call) --
        strstart, lookahead = 0, L
        match_length, match_start, prev_length, prev_match = 2, 0, 2, 0
        match_available = False
        inserted = 0  # positions 0 .. inserted-1 are on the chains
        # With a band's upper edge below 1, the bound below can end the parse early: the symbols
        # counted so far are final (the parse never takes one back), and their bound only grows
        # with more symbols (sum f log2(N/f) does not fall when a count rises), so once it puts
        # the row above the band, the whole row's would too. With a lower edge above 0, a bound
        # from above can: zlib never writes more than its fixed-code block (+ 1 byte, a stored
        # one), which costs the fixed codes of the symbols so far plus at most 9 bits for every
        # byte not yet counted: a literal takes 8 or 9; a match of 3-10 bytes 7 for its length
        # (no extra bits) and at most 5 + 13 for its distance, 25 <= 9 * 3; a longer one at
        # most 8 + 5 + 5 + 13 = 31 < 9 * 11.
        n_lit, lit_sum, n_dist, dist_sum, xbits, stat_bits = 1, 0.0, 0, 0.0, 0, 0  # EOB counted
        next_check = EARLY_CHECK
        cut = False
        while lookahead > 0:
            if track and strstart >= next_check:
                next_check = strstart + EARLY_CHECK
                if early:
                    entropy = (flogf[n_lit] - lit_sum) + (flogf[n_dist] - dist_sum)
                    dyn_low = np.int64(np.floor(entropy * (1.0 - 1e-9))) + xbits + 26
                    low = 18 + min((dyn_low + 3 + 7) >> 3, (stat_bits + 3 + 7) >> 3, L + 5)
                    if low / L >= hi + 1e-6:
                        cut = True
                        break
                if early_low:  # bytes before strstart are counted, but a pending one
                    rest = L - strstart + (1 if match_available else 0)
                    high = 18 + ((stat_bits + 7 + 9 * rest + 3 + 7) >> 3) + 1  # 7: the EOB
                    if high / L <= lo - 1e-6:
                        cut = True
                        break
            # INSERT_STRING: zlib puts every position with 3 bytes left on its chain, in order,
            # each before any search further on (the ones a match covers as it is emitted)
            while inserted <= min(strstart, L - 3):
                s = inserted
                h = hash3[s]
                prev[s] = head[h]
                head[h] = s
                count[h] += 1
                if s + 4 <= L:
                    h4 = hash4[s]
                    prev4[s] = head4[h4]
                    head4[h4] = s
                inserted += 1
            h = hash3[strstart]
            hash_head = prev[strstart] if lookahead >= 3 else 0
            prev_length, prev_match = match_length, match_start
            match_length = 2
            if hash_head != 0 and prev_length < max_lazy and strstart - hash_head <= MAX_DIST:
                s = strstart
                chain = max_chain >> 2 if prev_length >= good else max_chain
                nice = min(nice_length, lookahead)
                best = prev_length
                cur = hash_head
                if lookahead >= 4 and count[h] - 1 <= chain:
                    # zlib's longest_match where its chain limit cannot bind, on fewer
                    # entries. zlib keeps the first entry (the newest) whose match is longer
                    # than the best so far. Longer than 3 needs the first 4 bytes equal, so
                    # once the best is 3 or more only the entries of the 4-byte chain (a
                    # sub-list of the hash chain, in the same order) can take over. Before
                    # that, the first entry equal in 3 bytes sets the best: it is the newest
                    # 3-byte match, and no newer 4-byte match exists.
                    if best < 3:
                        while cur > 0 and not (win[cur] == win[s] and win[cur + 1] == win[s + 1]
                                               and win[cur + 2] == win[s + 2]):
                            cur = prev[cur]  # a hash collision
                        if cur > 0:
                            n = 3
                            while n < 258 and win[cur + n] == win[s + n]:
                                n += 1
                            match_start = cur
                            best = n
                        cur = prev4[s] if 2 < best < nice else 0
                    else:
                        cur = prev4[s]
                    while cur > 0:
                        if (win[cur + best] == win[s + best]
                                and win[cur + best - 1] == win[s + best - 1]
                                and win[cur] == win[s] and win[cur + 1] == win[s + 1]
                                and win[cur + 2] == win[s + 2] and win[cur + 3] == win[s + 3]):
                            n = 4
                            while n < 258 and win[cur + n] == win[s + n]:
                                n += 1
                            if n > best:
                                match_start = cur
                                best = n
                                if n >= nice:
                                    break
                        cur = prev4[cur]
                else:  # zlib's longest_match, literally
                    scan_end1 = win[s + best - 1]
                    scan_end = win[s + best]
                    while True:
                        if (win[cur + best] == scan_end and win[cur + best - 1] == scan_end1
                                and win[cur] == win[s] and win[cur + 1] == win[s + 1]):
                            n = 3  # byte 2 is equal too: the hash and bytes 0, 1 say so
                            while n < 258 and win[cur + n] == win[s + n]:
                                n += 1
                            if n > best:
                                match_start = cur
                                best = n
                                if n >= nice:
                                    break
                                scan_end1 = win[s + best - 1]
                                scan_end = win[s + best]
                        cur = prev[cur]
                        if cur <= 0:  # position 0 ends every chain: zlib never matches it
                            break
                        chain -= 1
                        if chain == 0:
                            break
                match_length = best if best <= lookahead else lookahead
                if match_length == 3 and strstart - match_start > TOO_FAR:
                    match_length = 2
            if prev_length >= 3 and match_length <= prev_length:
                # the previous match wins: count it and move past it (the strings it covers go
                # on their chains before the next search, above)
                code = 257 + length_code[prev_length - 3]
                dcode = dist_code[strstart - 1 - prev_match - 1]
                f = lfreq[code]
                lfreq[code] = f + 1
                g = dfreq[dcode]
                dfreq[dcode] = g + 1
                if track:
                    stat_bits += static_lit[code] + lit_extra[code - 257] + 5 + dist_extra[dcode]
                if early:
                    lit_sum += flogf[f + 1] - flogf[f]
                    dist_sum += flogf[g + 1] - flogf[g]
                    n_lit += 1
                    n_dist += 1
                    xbits += lit_extra[code - 257] + dist_extra[dcode]
                lookahead -= prev_length - 1
                strstart += prev_length - 1
                match_available = False
                match_length = 2
            elif match_available:
                c = win[strstart - 1]
                f = lfreq[c]
                lfreq[c] = f + 1
                if track:
                    stat_bits += static_lit[c]
                if early:
                    lit_sum += flogf[f + 1] - flogf[f]
                    n_lit += 1
                strstart += 1
                lookahead -= 1
            else:
                match_available = True
                strstart += 1
                lookahead -= 1
        if match_available:
            lfreq[win[strstart - 1]] += 1
        for s in range(inserted):  # clear the tables for the next row
            head[hash3[s]] = 0
            count[hash3[s]] = 0
            head4[hash4[s]] = 0
        if cut:
            out[b] = -1
            continue
        if bounded:
            # The size lies between two bounds that cost far less than the trees: above, the
            # block in zlib's fixed codes (zlib never writes more, but a stored block one byte
            # more); below, the entropy of the symbols (no prefix code, so no Huffman code,
            # length-limited or not, spends fewer bits) plus the 26 header bits every
            # dynamic block has, or the fixed or stored block if smaller. A row whose bounds
            # lie outside the band is out of it: its size is not needed (written as -1).
            # (the entropy only where it could matter: low <= high, so below hi unless high is)
            stat_bits = 0
            for n in range(257):  # loops without branches: they vectorise
                stat_bits += lfreq[n] * static_lit[n]
            for n in range(257, 286):
                stat_bits += lfreq[n] * (static_lit[n] + lit_extra[n - 257])
            for n in range(30):
                stat_bits += dfreq[n] * (5 + dist_extra[n])
            static_bytes = (stat_bits + 3 + 7) >> 3
            high = 18 + static_bytes + 1
            if high / L <= lo - 1e-6:
                out[b] = -1
                continue
            if high / L >= hi + 1e-6:
                xbits = 0
                n_lit = 0
                sum_lit = 0.0
                for n in range(286):
                    f = lfreq[n]
                    if f:
                        xbits += f * (lit_extra[n - 257] if n >= 257 else 0)
                        n_lit += f
                        sum_lit += flogf[f]
                n_dist = 0
                sum_dist = 0.0
                for n in range(30):
                    f = dfreq[n]
                    if f:
                        xbits += f * dist_extra[n]
                        n_dist += f
                        sum_dist += flogf[f]
                entropy = (flogf[n_lit] - sum_lit) + (flogf[n_dist] - sum_dist)
                dyn_low = np.int64(np.floor(entropy * (1.0 - 1e-9))) + xbits + 26
                low = 18 + min((dyn_low + 3 + 7) >> 3, static_bytes, L + 5)
                if low / L >= hi + 1e-6:
                    out[b] = -1
                    continue
        # -- _tr_flush_block: the three trees and the cheapest block type --
        lmax, lopt, lstat = build_tree(lfreq, llen, ldad, 286, static_lit, lit_extra, 257, 15,
                                       heap, bl_count)
        dmax, dopt, dstat = build_tree(dfreq, dlen, ddad, 30, static_dist, dist_extra, 0, 15,
                                       heap, bl_count)
        scan_tree(llen, lmax, bfreq)
        scan_tree(dlen, dmax, bfreq)
        _, bopt, _ = build_tree(bfreq, blen, bdad, 19, no_stree, bl_extra, 0, 7, heap, bl_count)
        max_blindex = 18
        while max_blindex >= 3 and blen[bl_order[max_blindex]] == 0:
            max_blindex -= 1
        opt_len = lopt + dopt + bopt + 3 * (max_blindex + 1) + 5 + 5 + 4
        opt_bytes = (opt_len + 3 + 7) >> 3
        static_bytes = (lstat + dstat + 3 + 7) >> 3
        best_bytes = min(opt_bytes, static_bytes)
        if L + 4 <= best_bytes:
            best_bytes = L + 5  # a stored block: 3 bits padded to a byte, LEN, NLEN, the data
        out[b] = 18 + best_bytes

