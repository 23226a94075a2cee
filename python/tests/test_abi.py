"""test_abi.py — the ctypes mirror (python/w4a8moe/_lib.py) against include/w4a8moe.h.

1. Every member of every mirrored struct, in order, by parsing the header (catches a member
   appended in C but not in Python, which sizeof can miss when it lands in tail padding).
2. sizeof, _Alignof and every offsetof, from a C program compiled from the header with $CC
   (skipped when no C compiler is found).
3. The enum values the binding names, against the header's.
4. What libw4a8moe.so exports (`nm -D --defined-only`): exactly the header's functions.
Needs no numpy; only 4 needs the shared library.
"""
import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import _common
from w4a8moe import _lib as L

HEADER = os.path.join(_common.REPO, "include", "w4a8moe.h")


def header_text():
    with open(HEADER) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_structs(text):
    """{struct name: [member names in order]} for every `typedef struct X { ... } X;`."""
    out = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        members = []
        for decl in m.group(2).split(";"):
            decl = decl.strip()
            if not decl:
                continue
            fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)  # function pointer member
            if fp:
                members.append(fp.group(1))
                continue
            head = re.match(r"^(.*?)(\w+)\s*(\[[^\]]*\])?\s*$", decl.split(",")[0], flags=re.S)
            members.append(head.group(2))
            for extra in decl.split(",")[1:]:
                members.append(re.sub(r"[\s*\[\]0-9]", "", extra))
        out[m.group(3)] = members
    return out


def header_enum_values(text):
    """{ENUM_VALUE_NAME: int} for explicit `NAME = number` enumerators."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"\b(W4A8MOE_\w+)\s*=\s*(\d+)\s*[,}]", text)}


class TestHeaderMembers(unittest.TestCase):
    def test_members_match(self):
        structs = header_structs(header_text())
        for cname, cls in L.STRUCTS.items():
            with self.subTest(struct=cname):
                self.assertIn(cname, structs, f"{cname} is no longer in the header")
                py = [f[0] for f in cls._fields_]
                self.assertEqual(structs[cname], py,
                                 f"{cname}: header members {structs[cname]} != ctypes {py}; "
                                 "hint: append the new members to python/w4a8moe/_lib.py")

    def test_parser_sees_structs(self):
        # guards the parser itself: the header has at least the structs we mirror
        structs = header_structs(header_text())
        self.assertGreaterEqual(len(structs), len(L.STRUCTS))
        self.assertEqual(structs["w4a8moe_int4_matrix"][:2], ["packed", "scale"])
        unmirrored = sorted(set(structs) - set(L.STRUCTS))
        if unmirrored:
            print(f"note: header structs not mirrored in Python (fine unless the binding "
                  f"needs them): {', '.join(unmirrored)}")


def header_functions(text):
    """{function name: parameter count} of the header's w4a8moe_* declarations."""
    out = {}
    for m in re.finditer(r"\b(w4a8moe_\w+)\s*\(([^()]*)\)\s*;", text):
        params = m.group(2).strip()
        out[m.group(1)] = 0 if params in ("", "void") else len(params.split(","))
    return out


class TestFunctions(unittest.TestCase):
    def test_prototypes(self):
        funcs = header_functions(header_text())
        self.assertIn("w4a8moe_layer_forward", funcs)
        self.assertEqual(funcs["w4a8moe_layer_forward"], 6)
        for name, (_res, args) in list(L.PROTOS.items()) + list(L.OPTIONAL_PROTOS.items()):
            with self.subTest(function=name):
                self.assertIn(name, funcs, f"{name} is no longer in the header")
                self.assertEqual(len(args), funcs[name], f"{name}: parameter count")
        missing = sorted(set(funcs) - set(L.PROTOS) - set(L.OPTIONAL_PROTOS))
        if missing:
            print(f"note: header functions the binding does not declare: {', '.join(missing)}")


class TestEnums(unittest.TestCase):
    def test_values(self):
        vals = header_enum_values(header_text())
        tables = [("W4A8MOE_STATUS_", {v: k for k, v in L.STATUS_NAMES.items()}),
                  ("W4A8MOE_DTYPE_", {k.upper(): v for k, v in L.DTYPES.items()}),
                  ("W4A8MOE_ACTIVATION_", {k.upper(): v for k, v in L.ACTIVATIONS.items()}),
                  ("W4A8MOE_ACT_", {k.upper(): v for k, v in L.ACT_SCHEMES.items()}),
                  ("W4A8MOE_ROUTING_", {k.upper(): v for k, v in L.ROUTINGS.items()}),
                  ("W4A8MOE_DEVICE_", {k.upper(): v for k, v in L.DEVICE_KINDS.items()}),
                  ("W4A8MOE_WEIGHT_", {k.upper(): v for k, v in L.WEIGHT_SCHEMES.items()})]
        checked = 0
        for prefix, table in tables:
            for name, value in table.items():
                cname = prefix + name
                self.assertIn(cname, vals, f"{cname} not in the header")
                self.assertEqual(vals[cname], value, cname)
                checked += 1
        self.assertGreaterEqual(checked, 20)


def _find_cc():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc.split()[0]):
            return cc
    return None


def _c_program():
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "w4a8moe.h"',
             'int main(void) {']
    for cname, cls in L.STRUCTS.items():
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        lines.append(f'printf("{cname} alignof %zu\\n", (size_t)_Alignof({cname}));')
        for field in cls._fields_:
            lines.append(f'printf("{cname} .{field[0]} %zu %zu\\n", '
                         f'offsetof({cname}, {field[0]}), sizeof((({cname} *)0)->{field[0]}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


class TestLayoutAgainstC(unittest.TestCase):
    def test_offsets(self):
        cc = _find_cc()
        if not cc:
            self.skipTest("no C compiler (cc/gcc/clang) found")
        with tempfile.TemporaryDirectory() as tmp:
            src, exe = os.path.join(tmp, "abi.c"), os.path.join(tmp, "abi")
            with open(src, "w") as f:
                f.write(_c_program())
            cmd = cc.split() + ["-std=c11", "-I", os.path.join(_common.REPO, "include"), src,
                                "-o", exe]
            r = subprocess.run(cmd, capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{' '.join(cmd)} failed:\n{r.stderr}")
            c_out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
        c = {}
        for line in c_out.splitlines():
            parts = line.split()
            c[(parts[0], parts[1])] = tuple(int(p) for p in parts[2:])
        n = 0
        for cname, cls in L.STRUCTS.items():
            self.assertEqual(c[(cname, "sizeof")], (ctypes.sizeof(cls),), f"sizeof({cname})")
            self.assertEqual(c[(cname, "alignof")], (ctypes.alignment(cls),), f"_Alignof({cname})")
            for field in cls._fields_:
                name = field[0]
                desc = getattr(cls, name)
                self.assertEqual(c[(cname, "." + name)], (desc.offset, desc.size),
                                 f"{cname}.{name}: C (offset, size) vs ctypes")
                n += 1
        self.assertGreaterEqual(n, 30)


class TestExports(unittest.TestCase):
    """The shared library exports exactly the header's functions: internal ones (even those
    named w4a8moe_*) are compiled hidden, and src/exports.map keeps the rest local."""

    def test_nm(self):
        nm = shutil.which("nm")
        if not nm:
            self.skipTest("nm (binutils) not found")
        _common.need_library()
        path = L.lib_path()
        if os.sep not in path:
            self.skipTest(f"the library was found by the loader as {path}; no file to read")
        r = subprocess.run([nm, "-D", "--defined-only", path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        syms = {line.split()[-1].split("@")[0] for line in r.stdout.splitlines() if line.strip()}
        self.assertTrue(syms, f"nm found no symbols in {path}")
        outside = sorted(s for s in syms if not s.startswith("w4a8moe_"))
        self.assertEqual(outside, [], f"{path} exports symbols outside w4a8moe_*")
        funcs = set(header_functions(header_text()))
        self.assertEqual(sorted(syms - funcs), [], "exported but not in include/w4a8moe.h")
        self.assertEqual(sorted(funcs - syms), [], "in include/w4a8moe.h but not exported")


if __name__ == "__main__":
    unittest.main()
