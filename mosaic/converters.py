"""`<id:...>` in URLs: a database id, at most a signed 64-bit integer. A longer number does not match the URL
(a 404), where `<int:...>` let it reach the database, which raised OverflowError (a 500)."""

ID_MAX = 2**63 - 1


class DatabaseIdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > ID_MAX:
            raise ValueError(f"{value} is larger than a database id")
        return number

    def to_url(self, value) -> str:
        return str(int(value))
