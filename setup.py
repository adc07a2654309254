"""What pyproject.toml cannot say: the BLAKE3 extension's kernels are assembly (`.S`), which
setuptools' compiler class does not take by default; gcc and clang assemble them (after the C
preprocessor) like any source. Everything else is in pyproject.toml."""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


setup(cmdclass={"build_ext": BuildExt})
