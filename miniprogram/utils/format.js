// Display helpers. Amounts are integer fen from the server; they are only ever formatted here, never computed into prices.

function yuan (fen) {
  const n = Number(fen) || 0
  const sign = n < 0 ? '-' : ''
  const abs = Math.abs(Math.round(n))
  return sign + '¥' + Math.floor(abs / 100) + '.' + String(abs % 100).padStart(2, '0')
}

const STATUS = {
  unpaid: { text: '待支付', cls: 'status-unpaid' },
  paid: { text: '已支付', cls: 'status-paid' },
  shipped: { text: '已发货', cls: 'status-shipped' },
  completed: { text: '已完成', cls: 'status-completed' },
  closed: { text: '已关闭', cls: 'status-closed' },
  refunding: { text: '退款中', cls: 'status-refunding' },
  refunded: { text: '已退款', cls: 'status-refunded' }
}

function status (value) {
  return STATUS[value] || { text: value || '未知', cls: 'status-closed' }
}

function pad (n) {
  return String(n).padStart(2, '0')
}

// ISO 8601 with offset -> "2024-05-01 12:30" in the phone's time zone.
function time (iso) {
  if (!iso) return ''
  const d = new Date(iso)
  if (isNaN(d.getTime())) return ''
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes())
}

// WeChat's delivery company ids (express_company) as people know them; the backend checks the code, and one this
// table lacks is shown as the code itself.
const EXPRESS = {
  SF: '顺丰速运',
  ZTO: '中通快递',
  YTO: '圆通速递',
  STO: '申通快递',
  YD: '韵达速递',
  JTSD: '极兔速递',
  EMS: '中国邮政速递物流',
  JD: '京东物流',
  DBL: '德邦物流',
  ZJS: '宅急送',
  HTKY: '百世快递',
  YZPY: '邮政快递包裹'
}

const LOGISTICS = {
  express: '快递',
  same_city: '同城配送',
  virtual: '虚拟商品，无需物流',
  pickup: '到店自提'
}

function shipment (s, index) {
  const express = s.logistics_type === 'express'
  return {
    key: index,
    express,
    typeText: LOGISTICS[s.logistics_type] || s.logistics_type || '',
    company: express ? (s.express_company_name || EXPRESS[s.express_company] || s.express_company || '') : '',
    trackingNo: s.tracking_no || '',
    itemDesc: s.item_desc || ''
  }
}

// An order from the API as the pages show it.
function order (o) {
  const s = status(o.status)
  return {
    outTradeNo: o.out_trade_no,
    title: o.body || (o.items && o.items[0] && o.items[0].name) || '订单',
    status: o.status,
    statusText: s.text,
    statusClass: s.cls,
    totalText: yuan(o.total_fee),
    refundedText: o.refunded_fee ? yuan(o.refunded_fee) : '',
    createdText: time(o.created_at),
    paidText: time(o.paid_at),
    transactionId: o.transaction_id || '',
    shippedText: time(o.shipped_at),
    receivedText: time(o.received_at),
    shipments: (o.shipments || []).map(shipment),
    // What wx.openBusinessView's weappOrderConfirm needs; offered only while the parcel is on its way.
    confirmReceipt: o.status === 'shipped' && o.confirm_receipt ? o.confirm_receipt : null,
    lines: (o.items || []).map((item) => ({
      productId: item.product_id,
      name: item.name,
      quantity: item.quantity,
      unitText: yuan(item.unit_price_fen),
      subtotalText: yuan(item.subtotal_fen)
    }))
  }
}

// The cart travels between pages as "id:qty,id:qty": product ids and quantities, never prices.
function encodeCart (items) {
  return items.map((i) => i.product_id + ':' + i.quantity).join(',')
}

function decodeCart (text) {
  const items = []
  for (const part of String(text || '').split(',')) {
    const m = /^(\d+):(\d+)$/.exec(part.trim())
    if (!m) return []
    const quantity = Number(m[2])
    if (quantity < 1 || quantity > 99) return []
    items.push({ product_id: Number(m[1]), quantity })
  }
  return items
}

module.exports = { yuan, status, time, order, shipment, encodeCart, decodeCart, EXPRESS }
