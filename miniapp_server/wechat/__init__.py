"""The WeChat protocol layer: clients, signing, XML and crypto. It imports nothing from Flask,
so a script or the sandbox's own process can use it as well as the app."""
