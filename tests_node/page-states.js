// Every state each page can draw, as the data its own code would set: the page's initial data with what its
// handlers setData, orders shaped by utils/format.js from contract-shaped API answers. compile.test.js renders each
// one with WeChat's compiler and with the harness and checks they agree.
'use strict'
const path = require('node:path')
const { MP_ROOT } = require('./harness/miniprogram')

const format = require(path.join(MP_ROOT, 'utils', 'format.js'))

const ITEM = { product_id: 1, name: '拿铁咖啡 Latte', quantity: 2, unit_price_fen: 1800, subtotal_fen: 3600 }

function apiOrder (over = {}) {
  return Object.assign({
    out_trade_no: 'MP20261201103000ABCDEF',
    status: 'paid',
    total_fee: 3600,
    refunded_fee: 0,
    body: '拿铁咖啡 Latte',
    items: [ITEM],
    created_at: '2026-12-01T10:30:00+08:00',
    paid_at: '2026-12-01T10:30:12+08:00',
    transaction_id: '4200001234202612011234567890'
  }, over)
}

const order = (over) => format.order(apiOrder(over))
const CONFIRM = { merchant_id: '1900000109', merchant_trade_no: 'MP20261201103000ABCDEF', transaction_id: '4200001234202612011234567890' }
const shipped = () => order({
  status: 'shipped',
  shipped_at: '2026-12-01T15:00:00+08:00',
  shipments: [
    { logistics_type: 'express', express_company: 'SF', tracking_no: 'SF1234567890123', item_desc: '拿铁咖啡 Latte × 1' },
    { logistics_type: 'express', express_company: 'XYZ', tracking_no: 'XYZ-42', item_desc: '拿铁咖啡 Latte × 1' }
  ],
  confirm_receipt: CONFIRM
})
const unpaid = () => order({ status: 'unpaid', paid_at: null, transaction_id: null })

const products = [
  { id: 1, name: '拿铁咖啡 Latte', priceFen: 1800, priceText: format.yuan(1800), quantity: 2 },
  { id: 4, name: '测试商品 1 分钱', priceFen: 1, priceText: format.yuan(1), quantity: 0 }
]

// route -> [{ name, data }]; `data` is merged over the page's initial data.
const STATES = {
  'pages/products/products': [
    { name: 'loading', data: {} },
    { name: 'error', data: { state: 'error', errorMessage: '网络连接失败，请检查网络后重试' } },
    { name: 'empty', data: { state: 'empty' } },
    { name: 'ready, two picked', data: { state: 'ready', products, count: 2, totalText: format.yuan(3600) } },
    { name: 'ready, nothing picked', data: { state: 'ready', products: products.map((p) => Object.assign({}, p, { quantity: 0 })) } }
  ],
  'pages/checkout/checkout': [
    { name: 'loading', data: {} },
    { name: 'error', data: { state: 'error', errorMessage: '商品已下架，请刷新后重新选择' } },
    { name: 'ready, priced by the catalogue', data: { state: 'ready', lines: unpaid().lines, totalText: '¥36.00', priced: false } },
    { name: 'ready, an existing order', data: { state: 'ready', lines: unpaid().lines, totalText: '¥36.00', priced: true, outTradeNo: unpaid().outTradeNo } },
    { name: 'paying', data: { state: 'paying', lines: unpaid().lines, totalText: '¥36.00', priced: true, outTradeNo: unpaid().outTradeNo } },
    { name: 'failed', data: { state: 'failed', payError: '您已取消支付', lines: unpaid().lines, totalText: '¥36.00', priced: true, outTradeNo: unpaid().outTradeNo } }
  ],
  'pages/result/result': [
    { name: 'waiting', data: {} },
    { name: 'waiting, asked three times', data: { attempts: 3, order: unpaid() } },
    { name: 'paid', data: { state: 'paid', attempts: 2, order: order() } },
    { name: 'pending', data: { state: 'pending', attempts: 20, order: unpaid() } },
    { name: 'closed', data: { state: 'closed', order: order({ status: 'closed', paid_at: null, transaction_id: null }) } },
    { name: 'refunded', data: { state: 'refunded', order: order({ status: 'refunded', refunded_fee: 3600 }) } },
    { name: 'error', data: { state: 'error', errorMessage: '网络连接失败，请检查网络后重试' } }
  ],
  'pages/orders/orders': [
    { name: 'loading', data: {} },
    { name: 'error', data: { state: 'error', errorMessage: '登录已失效，请重新进入小程序' } },
    { name: 'empty, the phone offered', data: { state: 'empty', phone: 'offer' } },
    { name: 'ready, more to load', data: { state: 'ready', orders: [order(), unpaid()], page: 1, hasMore: true } },
    { name: 'ready, loading more', data: { state: 'ready', orders: [order()], page: 1, hasMore: true, loadingMore: true } },
    { name: 'ready, loading more failed', data: { state: 'ready', orders: [order()], page: 1, hasMore: true, moreError: '网络连接失败，请检查网络后重试' } },
    { name: 'ready, the end', data: { state: 'ready', orders: [order({ status: 'refunding', refunded_fee: 1800 })], page: 1 } },
    { name: 'ready, shipped and completed', data: { state: 'ready', orders: [shipped(), order({ status: 'completed' })], page: 1 } },
    { name: 'phone binding', data: { state: 'ready', orders: [order()], phone: 'binding' } },
    { name: 'phone refused with a reason', data: { state: 'ready', orders: [order()], phone: 'offer', phoneMessage: '手机号授权已失效，请重新点击授权' } },
    { name: 'phone bound', data: { state: 'ready', orders: [order()], phone: 'bound', phoneMessage: '已绑定手机号 139****5678' } },
    { name: 'phone unavailable', data: { state: 'empty', phone: 'unavailable', phoneMessage: '手机号绑定暂未开放' } }
  ],
  'pages/order-detail/order-detail': [
    { name: 'loading', data: {} },
    { name: 'error', data: { state: 'error', errorMessage: '没有找到相关内容' } },
    { name: 'ready, unpaid', data: { state: 'ready', order: unpaid() } },
    { name: 'ready, unpaid, asking WeChat', data: { state: 'ready', order: unpaid(), syncing: true } },
    { name: 'ready, paid', data: { state: 'ready', order: order() } },
    { name: 'ready, partly refunded', data: { state: 'ready', order: order({ status: 'refunding', refunded_fee: 1800 }) } },
    { name: 'ready, shipped in two parcels', data: { state: 'ready', order: shipped() } },
    { name: 'ready, shipped, confirming', data: { state: 'ready', order: shipped(), confirming: true } },
    { name: 'ready, shipped, confirmation cancelled', data: { state: 'ready', order: shipped(), confirmMessage: '您没有确认收货；收到商品后可以再点“确认收货”' } },
    {
      name: 'ready, completed',
      data: {
        state: 'ready',
        order: order({
          status: 'completed',
          shipped_at: '2026-12-01T15:00:00+08:00',
          received_at: '2026-12-03T09:10:00+08:00',
          shipments: [{ logistics_type: 'virtual', express_company: null, tracking_no: null, item_desc: '会员卡' }],
          confirm_receipt: CONFIRM
        }),
        confirmMessage: '微信已收到您的确认收货，订单状态稍后更新，请下拉刷新查看'
      }
    }
  ]
}

module.exports = { STATES, apiOrder }
