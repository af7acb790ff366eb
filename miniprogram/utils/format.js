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

module.exports = { yuan, status, time, order, encodeCart, decodeCart }
