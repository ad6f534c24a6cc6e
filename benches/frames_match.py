"""Of the samples of fixtures/python/alternate.py whose native leaf is in zlib.crc32 or in
binascii.hexlify, the share whose innermost Python frame is the function that calls it
(`crc_phase`, `hex_phase`): Python frames that belong to their native stack.
usage: python3 frames_match.py FOLDED"""
import re, sys
ok = bad = 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(' ', 1); n = int(n)
    frames = stack.split(';')
    py = [f for f in frames if 'alternate.py:' in f]
    if not py: continue
    leaf_py = py[-1].split(' (')[0]
    native_after = frames[frames.index(py[-1])+1:]
    text = ';'.join(native_after)
    c = 'crc' if 'crc32' in text else ('hex' if ('hexlify' in text or 'strhex' in text) else None)
    if c is None: continue
    want = 'crc_phase' if c == 'crc' else 'hex_phase'
    if leaf_py == want: ok += n
    else: bad += n
print(f"matching {ok}, mismatched {bad}, {100*ok/max(1,ok+bad):.1f}% match")
