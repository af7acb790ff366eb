import click
from flask.cli import AppGroup

from ..extensions import db
from ..models import Product

products = AppGroup("products", help="Add and list the shop's products.")

DEMO = [("拿铁咖啡 Latte", 1800), ("美式咖啡 Americano", 1500), ("牛角包 Croissant", 1200), ("测试商品 1 分钱", 1)]


@products.command("add")
@click.argument("name")
@click.argument("price_fen", type=click.IntRange(min=1))
def add(name: str, price_fen: int) -> None:
    """Add a product priced PRICE_FEN (integer fen: 1800 is 18.00 yuan); prints its id."""
    name = name.strip()
    if not name or len(name) > 128:
        raise click.BadParameter("NAME must be 1 to 128 characters", param_hint="NAME")
    product = Product(name=name, price_fen=price_fen)
    db.session.add(product)
    db.session.commit()
    click.echo(product.id)


@products.command("list")
def list_() -> None:
    """List the products."""
    rows = db.session.execute(db.select(Product).order_by(Product.id)).scalars().all()
    click.echo(f"{'id':>4}  {'price_fen':>9}  {'active':<6}  name")
    for p in rows:
        click.echo(f"{p.id:>4}  {p.price_fen:>9}  {'yes' if p.active else 'no':<6}  {p.name}")


@products.command("demo")
def demo() -> None:
    """Add a few demo products, once (does nothing when products exist)."""
    if db.session.execute(db.select(Product.id).limit(1)).first():
        click.echo("products exist; nothing added")
        return
    db.session.add_all(Product(name=n, price_fen=p) for n, p in DEMO)
    db.session.commit()
    click.echo(f"added {len(DEMO)} demo products")
