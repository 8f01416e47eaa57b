"""A small FastAPI app with a lifespan, written as for uvicorn."""

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    print("fastapi-app: startup", flush=True)  # runs before the instance is ready
    yield {"prices": {"tea": 3.5, "cake": 4.0}}
    print("fastapi-app: shutdown", flush=True)  # runs when the instance is stopped


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    item: str
    quantity: int = 1


@app.get("/prices/{item}")
async def price(item: str, request: Request):
    prices = request.state.prices
    return {
        "item": item,
        "price": prices.get(item),
        "url": str(request.url_for("price", item=item)),
    }


@app.post("/orders")
async def order(order: Order, request: Request):
    unit = request.state.prices.get(order.item, 0.0)
    return {"item": order.item, "quantity": order.quantity, "total": unit * order.quantity}
