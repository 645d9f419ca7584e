"""Errors the CLI turns into exit codes: bad input exits 2 with one line, a failed job exits 1."""


class InputError(Exception):
    """Bad user input (a spec field, a file, a line in a file). Exit code 2."""


class SpecError(InputError):
    """A run spec that does not validate; carries one readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class JobError(Exception):
    """The job itself failed. Exit code 1."""


def first_line(err: BaseException) -> str:
    """A library's exception in a few words, for the one line an error gets (messages can run to pages)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
