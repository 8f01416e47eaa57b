"""Which of a function's images are removed: all but the newest few, never the one
just built; a failing engine leaves images, not an error."""

from __future__ import annotations

import pytest

from plat.daemon.drivers.container.builders import Image
from plat.daemon.drivers.container.retention import ImageRetention, surplus


def image(tag: str, created: float) -> Image:
    return Image((f"localhost/plat/fn:{tag}",), created)


def test_all_but_the_newest_go() -> None:
    images = [image("a", 1), image("c", 3), image("b", 2), image("d", 4)]
    assert surplus(images, 2, "") == ["localhost/plat/fn:b", "localhost/plat/fn:a"]
    assert surplus(images, 0, "") == [f"localhost/plat/fn:{t}" for t in "dcba"]
    assert surplus(images, 9, "") == []


def test_the_image_just_built_stays_even_when_its_clock_is_older() -> None:
    images = [image("new", 1), image("b", 2), image("c", 3)]
    assert surplus(images, 2, "localhost/plat/fn:new") == ["localhost/plat/fn:b"]


def test_images_of_the_same_second_go_in_the_order_they_were_built() -> None:
    # The engine lists whole seconds: deploys under a second apart tie on the clock.
    images = [image("v2", 7), image("v1", 7), image("v3", 7), image("v4", 7), image("v0", 6)]
    order = {f"localhost/plat/fn:v{n}": n for n in range(1, 5)}
    assert surplus(images, 2, "localhost/plat/fn:v4", order) == [
        "localhost/plat/fn:v2",
        "localhost/plat/fn:v1",
        "localhost/plat/fn:v0",
    ]


def test_every_tag_of_a_surplus_image_goes_and_untagged_ones_are_skipped() -> None:
    images = [Image(("x:1", "x:2"), 1), Image((), 0), image("keep", 5)]
    assert surplus(images, 1, "") == ["x:1", "x:2"]


class FailingBuilder:
    name = "failing"

    async def labelled(self, label: str) -> list[Image]:
        raise OSError("engine gone")


async def test_a_prune_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    retention = ImageRetention(FailingBuilder(), lambda tag: None)  # type: ignore[arg-type]
    retention.built("fn", "localhost/plat/fn:a")
    await retention.wait()
    assert "could not remove old images of fn" in caplog.text


async def test_a_removal_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    retention = ImageRetention(FailingBuilder(), lambda tag: None)  # type: ignore[arg-type]
    await retention.remove_all("fn")  # `plat rm` goes on
    assert "could not remove old images of fn" in caplog.text
