"""WeChat Pay API v2: signing, XML, the client, notifications and the client-side pay parameters."""
