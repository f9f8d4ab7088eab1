"""The renderer's shortcuts give what plain Jinja (in its sandbox) gives, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from mailer.messages.render import Renderer, TemplateProblem

TEMPLATES = {
    "t/subject.txt": "{{ headline }}",
    "t/body.txt": (
        "{{ headline }}\n{% for item in items|default([]) %}- {{ item.name }}"
        "{% if item.price is defined %} ({{ item.price }}){% endif %}\n{% endfor %}"
        "{{ range(3)|list }} {{ extra.items()|list }} {{ extra.keys|default('no') is callable }}"
        "{{ nested.a.b }}\n"
    ),
    "t/body.html": (
        "<p>{{ headline }}</p>{% for item in items %}<a href=\"{{ item.url }}\">"
        "{{ item.name }}</a>{% endfor %}{{ extra['get'] }}"
    ),
}
DATA = {
    "headline": "Sale <now> & \"more\"",
    "items": [{"name": "Amp <x>", "price": "€5", "url": "https://x.example/?a=1&b=2"},
              {"name": "Cable", "url": "https://x.example/c"}],
    "extra": {"items": "shadowed by the dict method", "get": "an item named get"},
    "nested": {"a": {"b": "deep"}},
}


@pytest.fixture
def renderer(tmp_path: Path) -> Renderer:
    for name, text in TEMPLATES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return Renderer([tmp_path])


def plain_jinja() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=DictLoader(TEMPLATES), undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        keep_trailing_newline=True,
    )


@pytest.mark.parametrize("filename", ["subject.txt", "body.txt", "body.html"])
def test_a_part_renders_as_plain_jinja_renders_it(renderer, filename):
    expected = plain_jinja().get_template(f"t/{filename}").render(DATA)
    assert renderer.part("t", filename, DATA) == expected
    assert renderer.part("t", filename, DATA) == expected  # and again, from the caches


def test_a_missing_item_is_still_an_error_naming_it(renderer):
    data = {**DATA, "items": [{"price": "€1"}]}
    with pytest.raises(TemplateProblem) as caught:
        renderer.render("t", data)
    assert "name" in str(caught.value)


def test_attribute_lookups_answer_as_the_sandbox_does(renderer):
    ours, theirs = renderer.env, plain_jinja()
    objects = [{"a": 1, "items": 2, "get": 3}, {}, {"__init__": 4}, [1, 2], "text", 5]
    names = ["a", "items", "get", "missing", "__init__", "__class__", "upper", "real"]
    for obj in objects:
        for name in names:
            got, expected = ours.getattr(obj, name), theirs.getattr(obj, name)
            assert type(got) is type(expected), (obj, name)
            if not isinstance(expected, theirs.undefined) and not callable(expected):
                assert got == expected, (obj, name)
    assert callable(ours.getattr({"items": 1}, "items"))  # the attribute wins, as in Jinja
    assert isinstance(ours.getattr({}, "__init__"), ours.undefined)  # unsafe: refused


def test_a_template_folder_found_stays_found_and_a_missing_one_is_looked_up_again(
    renderer, tmp_path
):
    assert renderer.exists("t") and renderer.exists("t")
    assert not renderer.exists("later")
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "subject.txt").write_text("s")
    (tmp_path / "later" / "body.txt").write_text("b")
    assert renderer.exists("later")
    assert not renderer.exists("../t")
