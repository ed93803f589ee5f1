"""Exit statuses, and the one exception that ends the client with one."""

EXIT_OK = 0
EXIT_ERROR = 1  # bad usage, or the server broke the contract
EXIT_LOGIN = 2
EXIT_NO_ROOM = 3
EXIT_UNREACHABLE = 4
EXIT_BANNED = 5
EXIT_INTERRUPTED = 130


class Fatal(Exception):
    """The client cannot go on: say `message` and exit with `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
