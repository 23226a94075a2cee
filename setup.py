"""setup.py — what pyproject.toml cannot say: the version, read from include/w4a8moe.h (the one
place versions live), and the native part, built by the Makefile and copied into the package.

build_py runs `make build/libw4a8moe.so` in this tree (the same target and flags `make test`
uses, so an existing build is reused) and copies libw4a8moe.so and, when the Makefile put it
beside it, libjansson.so.4 into the package: the library finds jansson there through its rpath
$ORIGIN (Debian's libjansson.a cannot be linked into a shared object: the Makefile says why), so
nothing outside the package is needed at run time. The wheel is therefore platform-specific.
setuptools' own build folder moves to build/pip so it never mixes with the Makefile's build/.
"""
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = os.path.dirname(os.path.abspath(__file__))
NATIVE = ("libw4a8moe.so", "libjansson.so.4")


def header_version():
    with open(os.path.join(ROOT, "include", "w4a8moe.h")) as f:
        m = re.search(r'^#define W4A8MOE_VERSION_STRING "([^"]+)"', f.read(), flags=re.M)
    if not m:
        raise RuntimeError("W4A8MOE_VERSION_STRING not found in include/w4a8moe.h")
    return m.group(1)


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        build_dir = os.environ.get("W4A8MOE_MAKE_BUILD", "build")
        lib = os.path.join(build_dir, "libw4a8moe.so")
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["make", "-C", ROOT, f"BUILD={build_dir}", "-j", jobs, lib], check=True)
        dest = os.path.join(self.build_lib, "w4a8moe")
        for name in NATIVE:
            src = os.path.join(ROOT, build_dir, name)
            if os.path.exists(src):
                shutil.copy2(src, os.path.join(dest, name))
            elif name == "libw4a8moe.so":
                raise RuntimeError(f"make did not produce {src}")


class NativeDistribution(Distribution):
    """A package with a shared library inside: a platform wheel, not a pure one."""

    def has_ext_modules(self):
        return True


# egg_info refuses an egg_base that does not exist yet (a fresh clone has no build/)
os.makedirs(os.path.join(ROOT, "build", "pip"), exist_ok=True)

setup(
    version=header_version(),
    cmdclass={"build_py": BuildWithLibrary},
    distclass=NativeDistribution,
    options={"build": {"build_base": os.path.join("build", "pip")},
             "egg_info": {"egg_base": os.path.join("build", "pip")}},
)
