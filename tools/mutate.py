"""
A small mutation-testing run: mutate one module one change at a time and run its tests against
each mutant; a mutant is *killed* when the tests fail (or hang past the timeout).

    python tools/mutate.py wings_twisted/fs/walk.py tests.unit.test_walk tests.unit.test_fs \\
        [--functions _open_root,directory,_descend] [--only N,M] [--list]

Mutations (Python's ``ast``, unparsed back to source): comparison operators swapped (``<`` and
``<=``, ``==`` and ``!=``, ``in`` and ``not in``...), ``and``/``or`` swapped, ``not`` removed,
integer constants +1 and -1, booleans flipped, strings emptied, ``+``/``-`` swapped (also in
augmented assignments), each statement of a function body replaced by ``pass``, and each
``raise`` and ``return`` value replaced by ``None``.  Each mutant is run in a scratch copy of the
repository (``wings_twisted`` and ``tests`` only), so the working tree is never touched, with
``PYTHONPATH`` pointing there first.  Docstrings are not mutated.  The report lists every
survivor with its line and change, to be judged equivalent or not by a person.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}


@dataclass
class Mutant:
    """
    One change: where, what, and the mutated module source.
    """

    index: int
    line: int
    description: str
    source: str


def _is_docstring(node: ast.AST, parent: ast.AST) -> bool:
    body = getattr(parent, "body", None)
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and bool(body) and body[0] is node)


def _targets(tree: ast.Module, functions: set[str] | None) -> Iterator[ast.AST]:
    """
    The nodes inside the chosen functions (all module functions when ``None``).
    """
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                functions is None or node.name in functions):
            for child in ast.walk(node):
                yield child


def _mutations(node: ast.AST, parent_of: dict[int, ast.AST]) -> Iterator[tuple[str, Callable[[ast.AST], None]]]:
    """
    ``(description, apply)`` for each mutation of ``node``; ``apply`` edits a copy in place.
    """
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            swap = _COMPARE_SWAPS.get(type(op))
            if swap is not None:
                def apply(n: ast.AST, i: int = i, swap: type = swap) -> None:
                    assert isinstance(n, ast.Compare)
                    n.ops[i] = swap()
                yield "{} -> {}".format(type(op).__name__, swap.__name__), apply
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And

        def apply_bool(n: ast.AST, other: type = other) -> None:
            assert isinstance(n, ast.BoolOp)
            n.op = other()
        yield "{} -> {}".format(type(node.op).__name__, other.__name__), apply_bool
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        def apply_not(n: ast.AST) -> None:
            assert isinstance(n, ast.UnaryOp)
            n.op = ast.UAdd()  # +x of a bool is its int: truthiness kept, "not" removed
        yield "not removed", apply_not
    elif isinstance(node, ast.Constant) and not _is_docstring(parent_of.get(id(node), node),
                                                              parent_of.get(id(parent_of.get(id(node), node)), node)):
        value = node.value
        if isinstance(value, bool):
            def apply_flip(n: ast.AST) -> None:
                assert isinstance(n, ast.Constant)
                n.value = not n.value
            yield "{} -> {}".format(value, not value), apply_flip
        elif isinstance(value, int):
            for delta in (1, -1):
                def apply_int(n: ast.AST, delta: int = delta) -> None:
                    assert isinstance(n, ast.Constant)
                    n.value = n.value + delta
                yield "{} -> {}".format(value, value + delta), apply_int
        elif isinstance(value, str) and value:
            def apply_str(n: ast.AST) -> None:
                assert isinstance(n, ast.Constant)
                n.value = "" if n.value != "" else "x"
            yield "{!r} -> ''".format(value[:20]), apply_str
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, (ast.Add, ast.Sub)):
        other_op = ast.Sub if isinstance(node.op, ast.Add) else ast.Add

        def apply_arith(n: ast.AST, other_op: type = other_op) -> None:
            n.op = other_op()  # type: ignore[attr-defined]
        yield "{} -> {}".format(type(node.op).__name__, other_op.__name__), apply_arith
    elif isinstance(node, (ast.Raise, ast.Return)) and node.__class__ is ast.Return and getattr(node, "value", None) is not None:
        def apply_return(n: ast.AST) -> None:
            assert isinstance(n, ast.Return)
            n.value = ast.Constant(None)
        yield "return value -> None", apply_return


def _statement_mutations(tree: ast.Module, functions: set[str] | None) -> Iterator[tuple[ast.AST, int, str]]:
    """
    ``(body owner, index, description)`` for each statement that can be replaced by ``pass``.
    """
    for node in _targets(tree, functions):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for i, statement in enumerate(body):
                if not isinstance(statement, ast.stmt) or _is_docstring(statement, node):
                    continue
                if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Pass)):
                    continue
                yield node, i, field


def mutants(source: str, functions: set[str] | None) -> list[Mutant]:
    """
    Every mutant of ``source`` (module docstring), in a stable order.
    """
    tree = ast.parse(source)
    found: list[Mutant] = []
    parent_of: dict[int, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parent_of[id(child)] = parent
    nodes = list(_targets(tree, functions))
    # Expression-level mutations, addressed by their position in a fresh walk.
    for position, node in enumerate(nodes):
        for description, apply in _mutations(node, parent_of):
            clone = copy.deepcopy(tree)
            target = list(_targets(clone, functions))[position]
            apply(target)
            found.append(Mutant(len(found), getattr(node, "lineno", 0),
                                description, ast.unparse(clone)))
    # Statement deletions.
    for owner, index, field in list(_statement_mutations(tree, functions)):
        position = nodes.index(owner)
        clone = copy.deepcopy(tree)
        target = list(_targets(clone, functions))[position]
        statement = getattr(target, field)[index]
        line = statement.lineno
        getattr(target, field)[index] = ast.Pass()
        found.append(Mutant(len(found), line, "statement removed: " + ast.unparse(statement)
                            .splitlines()[0][:60], ast.unparse(clone)))
    # Identical sources (e.g. a mutation ast.unparse cannot express) are dropped.
    original = ast.unparse(tree)
    seen = {original}
    unique = []
    for mutant in found:
        if mutant.source not in seen:
            seen.add(mutant.source)
            unique.append(mutant)
    return unique


def run_tests(scratch: str, tests: list[str], timeout: float) -> bool:
    """
    True when the tests pass in ``scratch`` (the mutant survived).
    """
    env = dict(os.environ, PYTHONPATH=scratch, PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run([sys.executable, "-m", "twisted.trial", "--temp-directory",
                                 os.path.join(scratch, "_trial_temp")] + tests,
                                cwd=scratch, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="path of the module to mutate, from the repository root")
    parser.add_argument("tests", nargs="+", help="trial test names to run against each mutant")
    parser.add_argument("--functions", help="comma-separated function names (default: all)")
    parser.add_argument("--only", help="comma-separated mutant numbers to run")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    functions = set(args.functions.split(",")) if args.functions else None
    path = os.path.join(REPO, args.module)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    all_mutants = mutants(source, functions)
    if args.only:
        wanted = {int(n) for n in args.only.split(",")}
        all_mutants = [m for m in all_mutants if m.index in wanted]
    if args.list:
        for m in all_mutants:
            print("#{:<4} line {:<4} {}".format(m.index, m.line, m.description))
        return 0
    scratch = tempfile.mkdtemp(prefix="mutate-")
    try:
        for name in ("wings_twisted", "tests"):
            shutil.copytree(os.path.join(REPO, name), os.path.join(scratch, name),
                            ignore=shutil.ignore_patterns("__pycache__", "_trial_temp"))
        target = os.path.join(scratch, args.module)
        if not run_tests(scratch, args.tests, args.timeout):
            print("the tests fail on the unmutated module: nothing to measure")
            return 2
        survivors = []
        started = time.monotonic()
        for m in all_mutants:
            with open(target, "w", encoding="utf-8") as f:
                f.write(m.source)
            survived = run_tests(scratch, args.tests, args.timeout)
            print("#{:<4} line {:<4} {:<8} {}".format(m.index, m.line,
                                                    "SURVIVED" if survived else "killed",
                                                    m.description), flush=True)
            if survived:
                survivors.append(m)
        with open(target, "w", encoding="utf-8") as f:
            f.write(source)
        total = len(all_mutants)
        killed = total - len(survivors)
        print("\n{} mutants, {} killed, {} survived ({:.1f} % killed) in {:.0f} s".format(
            total, killed, len(survivors), 100.0 * killed / total if total else 100.0,
            time.monotonic() - started))
        for m in survivors:
            print("survivor #{} line {}: {}".format(m.index, m.line, m.description))
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
