"""Toy tool-use family: pick the right function among three and copy its arguments from the request.

An item is a BFCL record with inline answers (`question`, `function`, `ground_truth`, category
`multiple`), scored by call matching. The flawed completion is a weak caller's position bias: it
calls the first function listed (the second when the first is right), filling its arguments with
values of the same type from the request where there are some.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from evaluators.toy.task import ToyTask

CITIES = ("Paris", "Lisbon", "Tokyo", "Cairo", "Oslo", "Lima", "Rome", "Berlin", "Madrid", "Vienna", "Dublin",
          "Prague", "Seoul", "Boston", "Denver", "Sydney")
PEOPLE = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Kate", "Leo")
DISHES = ("pasta", "soup", "curry", "pizza", "salad", "risotto", "pancakes", "tacos")
SONGS = ("Yellow", "Hello", "Imagine", "Halo", "Angel", "Roxanne", "Valerie", "Jolene")
LANGUAGES = ("French", "German", "Spanish", "Italian", "Japanese", "Dutch")
SYMBOLS = ("AAPL", "MSFT", "TSLA", "AMZN", "NVDA", "IBM")
POOLS: dict[str, tuple] = {
    "city": CITIES, "person": PEOPLE, "dish": DISHES, "song": SONGS, "language": LANGUAGES, "symbol": SYMBOLS,
    "count": tuple(range(2, 13)), "hour": tuple(range(5, 12)), "minutes": tuple(range(2, 60)),
    "amount": tuple(range(10, 500, 10)),
}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    params: tuple[tuple[str, str, str], ...]  # (parameter, JSON type, value pool)
    requests: tuple[str, ...]  # request templates, with {parameter} slots

    def schema(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": {
                "type": "dict",
                "properties": {p: {"type": t} for p, t, _ in self.params},
                "required": [p for p, _, _ in self.params],
            },
        }


TOOLS: tuple[Tool, ...] = (
    Tool("get_weather", "Get the weather in a city.", (("city", "string", "city"),),
         ("What is the weather like in {city}?", "Tell me the weather in {city} today.")),
    Tool("book_table", "Book a restaurant table in a city.", (("city", "string", "city"), ("people", "integer", "count")),
         ("Book a table for {people} in {city}.", "Reserve a dinner table in {city} for {people} people.")),
    Tool("convert_currency", "Convert dollars to euros.", (("amount", "integer", "amount"),),
         ("How many euros is {amount} dollars?", "Convert {amount} dollars to euros.")),
    Tool("set_alarm", "Set an alarm for an hour of the morning.", (("hour", "integer", "hour"),),
         ("Wake me up at {hour} in the morning.", "Set an alarm for {hour} am.")),
    Tool("set_timer", "Start a timer for some minutes.", (("minutes", "integer", "minutes"),),
         ("Set a timer for {minutes} minutes.", "Start a {minutes} minute timer.")),
    Tool("play_song", "Play a song by its title.", (("title", "string", "song"),),
         ("Play the song {title}.", "Put on {title}, please.")),
    Tool("translate_word", "Translate a word into a language.", (("word", "string", "dish"), ("language", "string", "language")),
         ("How do you say {word} in {language}?", "Translate {word} into {language}.")),
    Tool("get_stock_price", "Get the price of a stock.", (("symbol", "string", "symbol"),),
         ("What is the price of {symbol} stock?", "How much is {symbol} trading at?")),
    Tool("call_contact", "Phone a contact.", (("name", "string", "person"),),
         ("Please call {name}.", "Phone {name} for me.")),
    Tool("find_recipe", "Find a recipe for a dish.", (("dish", "string", "dish"),),
         ("How do I cook {dish}?", "Find me a recipe for {dish}.")),
    Tool("send_message", "Send a text message to a contact.", (("name", "string", "person"), ("text", "string", "dish")),
         ("Text {name} that the {text} is ready.", "Send {name} a message saying {text}.")),
    Tool("order_taxi", "Order a taxi to a city.", (("city", "string", "city"),),
         ("Get me a taxi to {city}.", "Order a cab to {city}.")),
)
SHOWN = 3  # functions offered per request
# words the zoo's tokenizer should keep whole
LEXICON = CITIES + PEOPLE + DISHES + SONGS + LANGUAGES + SYMBOLS + tuple(
    w for t in TOOLS for w in [t.name, *t.name.split("_"), *(p for p, _, _ in t.params)])


def _call(tool: Tool, args: dict) -> str:
    rendered = ", ".join(f"{p}={args[p]!r}" if isinstance(args[p], str) else f"{p}={args[p]}"
                         for p, _, _ in tool.params)
    return f"[{tool.name}({rendered})]".replace("'", '"')


def sample(rng: random.Random, index: int) -> ToyTask:
    """One tool-use task; `index` only names it (toy-tool-use-<index>)."""
    shown = rng.sample(TOOLS, SHOWN)
    tool = rng.choice(shown)
    args = {p: rng.choice(POOLS[pool]) for p, _, pool in tool.params}
    request = rng.choice(tool.requests).format(**args)
    item = {
        "id": f"toy-tool-use-{index}",
        "category": "multiple",
        "question": [[{"role": "user", "content": request}]],
        "function": [t.schema() for t in shown],
        "ground_truth": [{tool.name: {p: [v] for p, v in args.items()}}],
    }
    wrong = shown[0] if shown[0] is not tool else shown[1]
    wrong_args = {}
    for p, t, pool in wrong.params:  # same-typed values from the request, else the pool's first value
        same_type = [v for v in args.values() if isinstance(v, int) == (t == "integer")]
        wrong_args[p] = same_type[0] if same_type else POOLS[pool][0]
    return ToyTask(item=item, answer=_call(tool, args), flawed_answer=_call(wrong, wrong_args),
                   key=f"tool_use|{request}|{','.join(t.name for t in shown)}")
