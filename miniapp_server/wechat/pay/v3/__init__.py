"""WeChat Pay API v3: RSA-signed JSON calls, verified answers, AES-256-GCM notifications.

Pure protocol code, no Flask (like the v2 package beside it): `signing` (the
Authorization header, answer and notification signatures, pay parameters),
`crypto` (AEAD_AES_256_GCM), `keys` (the merchant's private key, WeChat Pay's
public key or platform certificates) and `client` (the endpoints).
"""
