"""A small Flask app with a blueprint, written as for any WSGI server."""

from flask import Blueprint, Flask, request, url_for

books = Blueprint("books", __name__, url_prefix="/books")
BOOKS = {1: "Dune", 2: "Solaris"}


@books.get("/")
def index():
    return {"books": [url_for("books.show", book_id=i) for i in BOOKS]}


@books.get("/<int:book_id>")
def show(book_id: int):
    if book_id not in BOOKS:
        return {"error": "no such book"}, 404
    return {"title": BOOKS[book_id], "self": url_for("books.show", book_id=book_id)}


app = Flask(__name__)
app.register_blueprint(books)


@app.post("/echo")
def echo():
    return app.response_class(request.get_data(), mimetype=request.mimetype)
