"""Shipping orders, and uploading the shipping information to WeChat's order-shipping management.

Durable and exactly once, as refunds are (docs/shipping.md):

1. `ship_order` checks everything it can without WeChat (state, express company code, tracking
   number, packages, WeChat's rule on changing shipping information), then, under a row lock on
   the order (an IMMEDIATE transaction on SQLite), writes the shipment rows and the order's new
   state in one transaction. Two `ship` of one order at once, in two processes, give one shipment:
   the second sees the first one's rows and is refused.
2. The upload is tried at once, after that commit. WeChat's answer settles it: `uploaded`, or
   `failed` when WeChat refused it in a way retrying cannot fix (bad parameter, unknown order,
   re-shipped too often); no answer, `-1`, a busy WeChat or a refused token (after the one
   refetch) leave it `pending`.
3. `flask orders reconcile` sends pending uploads again (`upload`). Before it re-sends one whose
   earlier attempt may have reached WeChat, it asks WeChat (`get_order`) whether WeChat already
   has it, so that a lost answer never costs the order its one change of shipping information.
   A store lock per order keeps two instances from sending the same upload at once.

The order is `shipped` once everything is shipped: at once for a unified shipment, with the upload
that says `is_all_delivered` for split ones (until then it stays `paid` with its packages).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterable

from flask import current_app
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import ApiError, bad_request, conflict, not_found
from ..extensions import db, store, wechat
from ..models import LogisticsType, Order, OrderStatus, Shipment, UploadState, utcnow
from ..sqlite_tuning import begin_write
from ..store import LockTimeout
from ..wechat import shipping as protocol
from ..wechat.errors import InvalidCredential, WeChatError, WeChatUnavailable
from . import messages

log = logging.getLogger(__name__)

NOT_IN_WECHAT_YET = 10060001  # 支付单不存在: also what WeChat says for a minute or so after a payment
SHIPPED_AT_WECHAT = (2, 3, 4)  # order_state: shipped, receipt confirmed, settled
UPLOAD_LOCK_LEASE = 60


@dataclass
class PackageIn:
    """One package as an operator describes it (`flask orders ship`, a CSV line)."""

    tracking_no: str | None = None
    express_company: str | None = None
    item_desc: str | None = None
    receiver_phone: str | None = None


@dataclass
class ShipOutcome:
    order: Order
    upload_no: int
    shipments: list[Shipment] = field(default_factory=list)
    error: WeChatError | None = None  # the upload's attempt did not succeed (see the shipments' state)

    @property
    def upload_state(self) -> str:
        return self.shipments[0].upload_state if self.shipments else UploadState.PENDING.value


def express_codes() -> dict[str, str]:
    """WeChat's delivery company ids we accept: our table plus SHIPPING_EXPRESS_CODES."""
    extra = current_app.config.get("SHIPPING_EXPRESS_CODES") or ""
    codes = dict(protocol.EXPRESS_COMPANIES)
    for code in filter(None, (c.strip().upper() for c in extra.split(","))):
        codes.setdefault(code, code)
    return codes


# -- shipping ---------------------------------------------------------------------------------------

def ship_order(order: Order, logistics_type: str, packages: Iterable[PackageIn] | None = None, *,
               split: bool = False, all_delivered: bool = True, change: bool = False,
               upload: bool = True) -> ShipOutcome:
    """Ship an order (all of it, or with `split` some packages of it) and upload that to WeChat.

    Raises ApiError (400 bad input, 409 wrong state) before anything is written; WeChat's failure
    to take the upload is in the outcome's `error` and the shipments' `upload_state`.
    """
    rows = _validated(order, logistics_type, list(packages or [PackageIn()]), split)
    if change:
        all_delivered = True  # a change states the whole shipment anew
    order_id, upload_no = _reserve(order.id, logistics_type, rows, split, all_delivered, change)
    error = try_upload(order_id, upload_no) if upload else None
    return _outcome(order_id, upload_no, error)


def _outcome(order_id: int, upload_no: int, error: WeChatError | None) -> ShipOutcome:
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order is not None
    shipments = [s for s in order.shipments if s.upload_no == upload_no]
    return ShipOutcome(order, upload_no, shipments, error)


def _validated(order: Order, logistics_type: str, packages: list[PackageIn], split: bool) -> list[dict]:
    """The rows to write, or a 400 saying what is wrong. Nothing here needs a lock."""
    if logistics_type not in protocol.LOGISTICS_TYPES:
        raise bad_request("invalid_logistics_type",
                          f"logistics type must be one of {', '.join(sorted(protocol.LOGISTICS_TYPES))}")
    express = logistics_type == LogisticsType.EXPRESS.value
    if split and not express:
        raise bad_request("split_needs_express", "WeChat takes split shipping (several packages) only for express")
    if not packages:
        raise bad_request("no_packages", "nothing to ship")
    if not split and len(packages) != 1:
        raise bad_request("too_many_packages", "a unified shipment is one package; use split shipping for more")
    if len(packages) > protocol.MAX_PACKAGES:
        raise bad_request("too_many_packages", f"WeChat takes at most {protocol.MAX_PACKAGES} packages per order")
    codes = express_codes()
    default_desc = item_description(order)
    consignor = _masked(current_app.config.get("SHIPPING_CONSIGNOR_PHONE") or None, "SHIPPING_CONSIGNOR_PHONE")
    rows = []
    for number, package in enumerate(packages, start=1):
        where = f"package {number}: " if len(packages) > 1 else ""
        desc = (package.item_desc or "").strip() or default_desc
        if len(desc) > protocol.MAX_ITEM_DESC:
            raise bad_request("invalid_item_desc",
                              f"{where}the item description is at most {protocol.MAX_ITEM_DESC} characters")
        row = {"item_desc": desc, "tracking_no": None, "express_company": None, "receiver_contact": None,
               "consignor_contact": None}
        if express:
            company = (package.express_company or "").strip().upper()
            tracking = (package.tracking_no or "").strip()
            if not company:
                raise bad_request("missing_express_company", f"{where}express shipping needs the company code")
            if company not in codes:
                raise bad_request("unknown_express_company",
                                  f"{where}unknown express company code {company!r} (WeChat's codes, e.g. "
                                  f"{', '.join(list(protocol.EXPRESS_COMPANIES)[:8])}; add others with "
                                  "SHIPPING_EXPRESS_CODES)")
            if not tracking:
                raise bad_request("missing_tracking_no", f"{where}express shipping needs the tracking number")
            if not protocol.valid_code(tracking) or not tracking.isprintable():
                raise bad_request("invalid_tracking_no", f"{where}the tracking number is 1 to 128 bytes of text")
            receiver, sender = _masked(package.receiver_phone, f"{where}receiver phone"), None
            if company == protocol.SF and not receiver:  # WeChat wants a contact for SF: the buyer's, or the shop's
                receiver = _buyer_phone(order)
                sender = None if receiver else consignor
                if not receiver and not sender:
                    raise bad_request("contact_required",
                                      f"{where}WeChat needs a contact phone for SF Express: give the receiver's "
                                      "phone, or set SHIPPING_CONSIGNOR_PHONE")
            row.update(express_company=company, tracking_no=tracking, receiver_contact=receiver,
                       consignor_contact=sender)
        elif package.tracking_no or package.express_company:
            raise bad_request("unexpected_tracking",
                              f"{logistics_type} shipping has no express company or tracking number")
        rows.append(row)
    trackings = [r["tracking_no"] for r in rows if r["tracking_no"]]
    if len(set(trackings)) != len(trackings):
        raise bad_request("duplicate_tracking_no", "the same tracking number twice")
    return rows


def _masked(phone: str | None, what: str) -> str | None:
    if not phone:
        return None
    try:
        return protocol.mask_phone(phone)
    except ValueError as exc:
        raise bad_request("invalid_phone", f"{what}: not {exc}") from None


def _buyer_phone(order: Order) -> str | None:
    try:
        return protocol.mask_phone(order.user.phone) if order.user and order.user.phone else None
    except ValueError:
        return None


def item_description(order: Order) -> str:
    """What the order holds, as WeChat's `item_desc` example has it ("微信红包抱枕*1个"), cut to 120 characters."""
    text = "; ".join(f"{item.name}*{item.quantity}" for item in order.items) or order.body
    return text if len(text) <= protocol.MAX_ITEM_DESC else text[: protocol.MAX_ITEM_DESC - 1] + "…"


def _reserve(order_id: int, logistics_type: str, rows: list[dict], split: bool, all_delivered: bool,
             change: bool) -> tuple[int, int]:
    for attempt in range(5):
        try:
            upload_no = _reserve_once(order_id, logistics_type, rows, split, all_delivered, change)
            db.session.commit()
            messages.send_ready()  # the buyer's "shipped" message, now that the shipment is committed
            return order_id, upload_no
        except ApiError:
            db.session.rollback()
            raise
        except IntegrityError:
            db.session.rollback()  # a concurrent ship took the same upload number: look again
        except OperationalError:
            db.session.rollback()
            if attempt == 4:
                raise
    raise ApiError(503, "try_again", "could not record the shipment; try again")


def _reserve_once(order_id: int, logistics_type: str, rows: list[dict], split: bool, all_delivered: bool,
                  change: bool) -> int:
    begin_write(db.session)  # read-then-write: SQLite's write lock up front; a row lock on PostgreSQL below
    order = db.session.execute(
        db.select(Order).filter_by(id=order_id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if order is None:
        raise not_found("no such order")
    existing = list(db.session.execute(
        db.select(Shipment).filter_by(order_id=order.id).order_by(Shipment.upload_no, Shipment.package_no)
    ).scalars())
    active = [s for s in existing if not s.superseded]
    _check_state(order, active, existing, split, change)
    live = [s for s in active if s.upload_state != UploadState.FAILED.value]
    if len(live) + len(rows) > protocol.MAX_PACKAGES and not change:
        raise conflict("too_many_packages", f"order {order.out_trade_no} already has {len(live)} packages; WeChat "
                                            f"takes at most {protocol.MAX_PACKAGES}")
    if not change:
        known = {s.tracking_no for s in live if s.tracking_no}
        again = [r["tracking_no"] for r in rows if r["tracking_no"] in known]
        if again:
            raise conflict("duplicate_tracking_no", f"order {order.out_trade_no} already shipped {again[0]}")
    # What never reached WeChat (refused) is replaced; a change replaces everything.
    for s in active:
        if change or s.upload_state == UploadState.FAILED.value:
            s.superseded = True
    upload_no = max((s.upload_no for s in existing), default=0) + 1
    now = utcnow()
    for number, row in enumerate(rows, start=1):
        db.session.add(Shipment(
            order_id=order.id, upload_no=upload_no, package_no=number, logistics_type=logistics_type,
            delivery_mode=protocol.SPLIT if split else protocol.UNIFIED, is_all_delivered=bool(all_delivered),
            is_change=change, upload_state=UploadState.PENDING.value, upload_time=now, created_at=now, **row))
    if all_delivered or not split:
        first_time = order.shipped_at is None  # a change, or a package sent again, tells the buyer nothing new
        if order.status == OrderStatus.PAID.value:
            order.status = OrderStatus.SHIPPED.value
        order.shipped_at = order.shipped_at or now
        if first_time:  # in this transaction: gone if it rolls back; sent after the commit (_reserve)
            messages.queue(order, "shipped", values=_message_values(logistics_type, live, rows, now))
    order.updated_at = now
    db.session.flush()
    log.info("order %s: upload %s of %s package(s) by %s stored%s", order.out_trade_no, upload_no, len(rows),
             logistics_type, " (a change)" if change else "")
    return upload_no


# What a shipped message says instead of an express company, for the other ways of delivering.
LOGISTICS_NAMES = {"same_city": "同城配送", "virtual": "虚拟发货", "pickup": "用户自提"}


def _message_values(logistics_type: str, earlier: list[Shipment], rows: list[dict], now) -> dict:
    """The shipped message's express company and tracking numbers: every package of the order, in order."""
    packages = [(s.express_company, s.tracking_no) for s in earlier if s.upload_state != UploadState.FAILED.value] \
        + [(r["express_company"], r["tracking_no"]) for r in rows]
    codes = express_codes()
    companies = list(dict.fromkeys(codes.get(c, c) for c, _ in packages if c))
    trackings = [t for _, t in packages if t]
    return {"shipped_at": now,
            "express_company": "、".join(companies) or LOGISTICS_NAMES.get(logistics_type, logistics_type),
            "tracking_no": ",".join(trackings) or "-"}


def _check_state(order: Order, active: list[Shipment], existing: list[Shipment], split: bool, change: bool) -> None:
    """WeChat's rules and ours on who may be shipped, and when shipping may be changed."""
    no, status = order.out_trade_no, order.status
    if status in (OrderStatus.UNPAID.value, OrderStatus.CLOSED.value):
        raise conflict("order_not_paid", f"order {no} is {status}: only paid orders can be shipped")
    if status in (OrderStatus.REFUNDING.value, OrderStatus.REFUNDED.value):
        raise conflict(f"order_{status}", f"order {no} is {status} and cannot be shipped")
    if status == OrderStatus.COMPLETED.value:
        raise conflict("order_completed", f"order {no} is completed (the buyer confirmed receipt): WeChat takes no "
                                          "more changes of its shipping information")
    if status not in (OrderStatus.PAID.value, OrderStatus.SHIPPED.value):
        raise conflict(f"order_{status}", f"order {no} is {status} and cannot be shipped")
    pending = [s for s in active if s.upload_state == UploadState.PENDING.value]
    if pending:
        raise conflict("upload_pending", f"order {no}: upload {pending[0].upload_no} has not reached WeChat yet; "
                                         "`flask orders reconcile` retries it: ship again once it is through")
    accepted = [s for s in active if s.upload_state == UploadState.UPLOADED.value]
    if change:
        if status != OrderStatus.SHIPPED.value or not accepted:
            raise conflict("nothing_to_change", f"order {no}: WeChat has no complete shipment of it to change; "
                                                "ship it without --change")
        used = [s for s in existing if s.is_change and s.upload_state != UploadState.FAILED.value]
        if used:
            raise conflict("change_used", f"order {no}: WeChat lets an order's shipping information be changed once, "
                                          f"and it was changed on {used[0].created_at:%Y-%m-%d %H:%M} UTC")
        return
    if status == OrderStatus.SHIPPED.value and accepted:
        raise conflict("order_shipped", f"order {no} is already shipped; to correct its shipping information use "
                                        "--change (WeChat allows one change per order, until receipt is confirmed)")
    if status == OrderStatus.PAID.value and accepted and not split:
        raise conflict("split_in_progress", f"order {no} is being shipped in split packages: ship the rest with "
                                            "--split (and --all-delivered with the last ones)")


# -- uploading --------------------------------------------------------------------------------------

def try_upload(order_id: int, upload_no: int) -> WeChatError | None:
    """Send one pending upload to WeChat and record what WeChat said. Commits; never raises WeChatError.

    Returns the error when the upload did not go through (the rows say whether it stays pending).
    """
    try:
        with store.lock(f"shipping-upload:{order_id}", timeout=UPLOAD_LOCK_LEASE, wait=0):
            return _upload(order_id, upload_no)
    except LockTimeout:
        return WeChatUnavailable("another process is uploading this order's shipping right now")


def _upload(order_id: int, upload_no: int) -> WeChatError | None:
    db.session.expire_all()
    rows = list(db.session.execute(
        db.select(Shipment).filter_by(order_id=order_id, upload_no=upload_no, upload_state=UploadState.PENDING.value)
        .order_by(Shipment.package_no)).scalars())
    if not rows:
        db.session.commit()
        return None  # uploaded or refused meanwhile
    order = rows[0].order
    first = rows[0]
    mch_id = current_app.config["WECHAT_MCH_ID"]
    key = protocol.order_key(mchid=mch_id, out_trade_no=order.out_trade_no)
    body = protocol.upload_body(
        key=key, logistics_type=first.logistics_type, openid=payer_openid(order), upload_time=first.upload_time,
        split=first.delivery_mode == protocol.SPLIT, all_delivered=first.is_all_delivered,
        packages=[protocol.Package(item_desc=s.item_desc, tracking_no=s.tracking_no, express_company=s.express_company,
                                   receiver_contact=s.receiver_contact, consignor_contact=s.consignor_contact)
                  for s in rows])
    paid_at, no, tried = order.paid_at, order.out_trade_no, first.attempts > 0
    logistics, trackings = first.logistics_type, {s.tracking_no for s in rows if s.tracking_no}
    db.session.commit()  # never hold a database transaction across a call to WeChat
    try:
        if tried and _already_at_wechat(mch_id, no, logistics, trackings):
            log.info("order %s: upload %s was already at WeChat (an earlier answer was lost)", no, upload_no)
        else:
            wechat.access_token.call(lambda token: wechat.shipping.upload_shipping_info(token, body))
    except WeChatError as err:
        permanent = not _transient(err, paid_at)
        _record_failure(order_id, upload_no, err, permanent)
        log.warning("order %s: upload %s %s: %s", no, upload_no, "refused by WeChat" if permanent else
                    "not through, stays pending", err)
        return err
    db.session.execute(
        update(Shipment).where(Shipment.order_id == order_id, Shipment.upload_no == upload_no,
                               Shipment.upload_state == UploadState.PENDING.value)
        .values(upload_state=UploadState.UPLOADED.value, uploaded_at=utcnow(), attempts=Shipment.attempts + 1,
                last_error=None, updated_at=utcnow()),
        execution_options={"synchronize_session": False})
    db.session.commit()
    log.info("order %s: upload %s accepted by WeChat", no, upload_no)
    return None


def payer_openid(order: Order) -> str:
    """`payer.openid`: who paid, as WeChat's notification said (a NATIVE or APP payer need not be the order's
    owner); the owner's openid for payments recorded before we kept it."""
    paid = next((p for p in order.payments if p.transaction_id == order.transaction_id), None)
    return (paid.payer_openid if paid is not None and paid.payer_openid else None) or order.user.openid


def _already_at_wechat(mch_id: str, out_trade_no: str, logistics_type: str, trackings: set[str]) -> bool:
    """Does WeChat already hold this upload (an earlier attempt got through but its answer was lost)?"""
    try:
        order = wechat.access_token.call(lambda token: wechat.shipping.get_order(
            token, merchant_id=mch_id, merchant_trade_no=out_trade_no))
    except WeChatError as err:
        if err.should_retry or isinstance(err, InvalidCredential):
            raise
        return False  # WeChat does not know the order (yet): the upload itself will say what is wrong
    if order.get("order_state") not in SHIPPED_AT_WECHAT:
        return False
    shipping = order.get("shipping") if isinstance(order.get("shipping"), dict) else {}
    if trackings:
        theirs = {str(p.get("tracking_no")) for p in shipping.get("shipping_list") or [] if isinstance(p, dict)}
        return trackings <= theirs
    return shipping.get("logistics_type") == protocol.LOGISTICS_TYPES[logistics_type]


def _transient(err: WeChatError, paid_at) -> bool:
    """Can trying again help? No answer, -1, busy, a token refused even after the refetch: yes.
    WeChat not knowing the order yet, shortly after the payment: yes. Any other errcode: no."""
    if err.should_retry or isinstance(err, InvalidCredential):
        return True
    if err.code == NOT_IN_WECHAT_YET and paid_at is not None:
        grace = timedelta(seconds=current_app.config.get("SHIPPING_NOT_FOUND_GRACE", 1800))
        return utcnow() - paid_at < grace
    return False


def _record_failure(order_id: int, upload_no: int, err: WeChatError, permanent: bool) -> None:
    errcode = err.code if isinstance(err.code, int) else None
    values = dict(attempts=Shipment.attempts + 1, errcode=errcode, errmsg=(err.message or "")[:255] if errcode else None,
                  last_error=f"{type(err).__name__}: {err}"[:255], updated_at=utcnow())
    if permanent:
        values["upload_state"] = UploadState.FAILED.value
    db.session.execute(
        update(Shipment).where(Shipment.order_id == order_id, Shipment.upload_no == upload_no,
                               Shipment.upload_state == UploadState.PENDING.value).values(**values),
        execution_options={"synchronize_session": False})
    db.session.commit()


def pending_uploads(cutoff, limit: int) -> list[tuple[int, int]]:
    """(order_id, upload_no) of uploads still pending that were stored before `cutoff`, oldest first."""
    rows = db.session.execute(
        db.select(Shipment.order_id, Shipment.upload_no, func.min(Shipment.created_at))
        .where(Shipment.upload_state == UploadState.PENDING.value, Shipment.created_at <= cutoff)
        .group_by(Shipment.order_id, Shipment.upload_no)
        .order_by(func.min(Shipment.created_at), Shipment.upload_no).limit(limit)).all()
    db.session.commit()
    return [(r[0], r[1]) for r in rows]


def upload_state(order_id: int, upload_no: int) -> str | None:
    state = db.session.execute(db.select(Shipment.upload_state).filter_by(order_id=order_id, upload_no=upload_no)
                               .limit(1)).scalar_one_or_none()
    db.session.commit()
    return state


# -- virtual goods on payment ----------------------------------------------------------------------

def auto_ship_virtual(out_trade_no: str) -> ShipOutcome | None:
    """AUTO_SHIP_VIRTUAL: ship a just-paid order as virtual goods. Never raises (the payment is done)."""
    order = db.session.execute(db.select(Order).filter_by(out_trade_no=out_trade_no)).scalar_one_or_none()
    if order is None or order.status != OrderStatus.PAID.value or order.current_shipments:
        db.session.commit()
        return None
    try:
        return ship_order(order, LogisticsType.VIRTUAL.value)
    except ApiError as err:  # shipped or refunded meanwhile: nothing to do
        log.info("auto-ship of %s skipped: %s", out_trade_no, err.message)
    except Exception:  # noqa: BLE001 - reconcile ships it later; the payment itself stands
        db.session.rollback()
        log.exception("auto-ship of %s failed; reconcile will ship it", out_trade_no)
    return None


def unshipped_paid_orders(cutoff, limit: int) -> list[str]:
    """Paid orders without any shipment, paid before `cutoff` (AUTO_SHIP_VIRTUAL's safety net)."""
    nos = list(db.session.execute(
        db.select(Order.out_trade_no).where(Order.status == OrderStatus.PAID.value, Order.paid_at <= cutoff,
                                            ~Order.shipments.any()).order_by(Order.paid_at).limit(limit)).scalars())
    db.session.commit()
    return nos
