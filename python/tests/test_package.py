"""test_package.py — the package as a user installs it: `pip install` of this repository into a
fresh virtualenv, then, from outside the repository and with no W4A8MOE_LIB or PYTHONPATH,
`import w4a8moe` finds the library inside the package and runs a layer, which must give the
same bits as the repository's binding on the same inputs.

Offline by design (CI may have no PyPI): the venv sees the interpreter's own packages
(--system-site-packages: numpy, setuptools, wheel, which `make test-python` makes sure of) and
pip runs with --no-build-isolation --no-index. With PyPI at hand, the plain
`python3 -m venv v && v/bin/pip install .` works too (docs/python.md).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import _common

np = _common.need_numpy()
_common.need_library()
import w4a8moe  # noqa: E402

import test_layer as TL  # noqa: E402

# Runs inside the venv: a tiny layer on inputs from a file, output bits back as JSON.
CHILD = r"""
import json, sys
import numpy as np
import w4a8moe
z = np.load(sys.argv[1])
w = {k: z[k] for k in ("w13_packed", "w13_scale", "w2_packed", "w2_scale")}
layer = w4a8moe.Layer(weights=w, max_tokens=8, hidden=256, inter=128, experts=8, top_k=2,
                      group_size=64, backend="cpu")
out = layer.forward(z["x"], topk_ids=z["ids"], topk_weights=z["wts"])
print(json.dumps({"file": w4a8moe.__file__, "lib": w4a8moe.lib_path(),
                  "version": w4a8moe.version(), "backend": layer.backend,
                  "out": out.astype(np.uint16).tolist()}))
"""


class TestPipInstall(unittest.TestCase):
    def test_install_and_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "v")
            r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"venv: {r.stderr}")
            env = {k: v for k, v in os.environ.items()
                   if k not in ("W4A8MOE_LIB", "PYTHONPATH", "PIP_FIND_LINKS")}
            if os.environ.get("W4A8MOE_BUILD"):  # the make build dir under test (make sets it)
                env["W4A8MOE_MAKE_BUILD"] = os.environ["W4A8MOE_BUILD"]
            pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--no-index",
                   "--no-build-isolation", "--no-cache-dir", "--quiet", _common.REPO]
            r = subprocess.run(pip, capture_output=True, text=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, f"{' '.join(pip)}:\n{r.stdout}\n{r.stderr}")

            rng = TL.rng_for(400)
            w = TL.make_weights(rng, 256, 128, 8, 64)
            x, _ = TL.make_x(rng, 5, 256, "bf16")
            ids, wts = TL.make_routing(rng, 5, 8, 2)
            inputs = os.path.join(tmp, "in.npz")
            np.savez(inputs, x=x, ids=ids, wts=wts, **w)
            r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", CHILD, inputs],
                               capture_output=True, text=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, f"the installed package:\n{r.stderr}")
            got = json.loads(r.stdout.strip().splitlines()[-1])

            site = os.path.realpath(venv)
            self.assertTrue(os.path.realpath(got["file"]).startswith(site), got["file"])
            self.assertTrue(os.path.realpath(got["lib"]).startswith(site),
                            f"the library must come from the package, not {got['lib']}")
            pkg = os.path.dirname(got["lib"])
            self.assertTrue(os.path.exists(os.path.join(pkg, "libjansson.so.4")),
                            "libjansson.so.4 travels inside the package")
            self.assertEqual(got["version"], w4a8moe.version())
            self.assertEqual(got["backend"], "cpu")
            here = w4a8moe.Layer(weights=w, max_tokens=8, backend="cpu", **TL.TINY)
            want = here.forward(x, topk_ids=ids, topk_weights=wts)
            self.assertTrue(np.array_equal(np.array(got["out"], dtype=np.uint16), want),
                            "the installed package and the repository's binding disagree")


if __name__ == "__main__":
    unittest.main()
