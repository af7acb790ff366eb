from flask import Response

from . import bp, document_json


@bp.get("/openapi.json")
def openapi():
    return Response(document_json(), mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})
