"""Click commands for operators: `flask products`, `flask orders`, `flask sandbox`, `flask wechat`."""

from flask import Flask


def register(app: Flask) -> None:
    from . import bills, refunds  # noqa: F401  (add `refund`, `reconcile` and `bills` to `flask orders`)
    from . import shipping  # noqa: F401  (adds `ship`, `ship-batch`, `trade-managed`, `set-jump-path`)
    from .orders import orders
    from .products import products
    from .sandbox import sandbox
    from .wechat import wechat_cli

    app.cli.add_command(products)
    app.cli.add_command(orders)
    app.cli.add_command(sandbox)
    app.cli.add_command(wechat_cli)
