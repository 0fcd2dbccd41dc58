#!/usr/bin/env python3
"""emu_transform.py SRC.cu OUT.cpp — rewrites CUDA kernel launches
    kern<<<grid, block, smem, stream>>>(args);   into   emu_launch(dim3(grid), dim3(block), kern, args);
so the file compiles as C++ against cuda_emu.h (tests/gpu/emu)."""
import re
import sys


def split_top(s):
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{<' and not (ch == '<' and depth == 0 and False):
            depth += ch in '([{'
        if ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur.strip())
            cur = ''
        else:
            cur += ch
    out.append(cur.strip())
    return out


src = open(sys.argv[1]).read()
pat = re.compile(r'([A-Za-z_]\w*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\((.*?)\);', re.S)


def rep(m):
    kern, cfg, args = m.group(1), split_top(m.group(2)), m.group(3).strip()
    return 'emu_launch(dim3(%s), dim3(%s), %s%s);' % (cfg[0], cfg[1], kern, ', ' + args if args else '')


out, n = pat.subn(rep, src)
if '<<<' in out:
    sys.exit('emu_transform: a launch was not rewritten in ' + sys.argv[1])
open(sys.argv[2], 'w').write('#line 1 "%s"\n' % sys.argv[1] + out)
print('%s: %d launches' % (sys.argv[1], n))
