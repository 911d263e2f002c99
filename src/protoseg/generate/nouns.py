"""Noun extraction from captions (FreeDA's "noun parser"), behind one small interface.

FreeDA extracts the nouns mentioned in every caption with a noun parser (NLTK in the paper), embeds each
noun as a textual key and localises it in the synthesised image by cross-attention. Two extractors:

- :class:`LexiconNounExtractor` (no model): a built-in lexicon of concrete nouns — the class names of
  COCO-Stuff, ADE20K, Pascal Context, Pascal VOC and Cityscapes in natural spelling, plus frequent
  caption nouns for people, places and objects — matched greedily (longest first, so "traffic light"
  and "fire hydrant" are one noun), with plural -> singular handling of the last word. It does no
  part-of-speech tagging: a lexicon word is taken as a noun wherever it appears, except a few material /
  colour words (``orange``, ``glass``, ``wood``, ``light``...) directly followed by another noun or a
  colour, where they are modifiers ("glass vase", "light blue shirt").
- :class:`SpacyNounExtractor`: spaCy's tagger; every token tagged ``NOUN`` is a noun (its lemma).

Both return :class:`NounMention` objects: the noun (singular, lower case) plus the character span of the
words in the caption (``"dogs"`` for the noun ``dog``), which the synthesis stage needs to find the
caption tokens whose cross-attention localises the noun. A noun is reported once per caption (first
mention).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from protoseg.errors import ProtosegError
from protoseg.generate.captions import Caption


@dataclass(frozen=True)
class NounMention:
    """A noun in a caption: ``noun`` (singular, lower case) and ``text == caption[start:end]``."""

    noun: str
    start: int
    end: int
    text: str


@runtime_checkable
class NounExtractor(Protocol):
    """Maps a caption to its nouns, in order of first mention, each once."""

    name: str

    def extract(self, caption: str) -> list[NounMention]:
        ...


def nouns_of(extractor: NounExtractor, caption: str) -> list[str]:
    """Just the noun strings of :meth:`NounExtractor.extract`."""
    return [m.noun for m in extractor.extract(caption)]


# ------------------------------------------------------------------------------------------- lexicon

_DATASET_NOUNS = """
person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign
parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag
tie suitcase frisbee ski snowboard sports_ball kite baseball_bat baseball_glove skateboard
surfboard tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange
broccoli carrot hot_dog pizza donut doughnut cake chair couch potted_plant bed dining_table toilet tv
television laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator fridge book
clock vase scissors teddy_bear hair_drier hair_dryer toothbrush banner blanket branch bridge building
bush cabinet cage cardboard carpet ceiling_tile cloth clothes cloud counter cupboard curtain desk dirt
door fence floor flower fog food fruit furniture grass gravel ground hill house leaf light mat metal
mirror moss mountain mud napkin net paper pavement pillow plant plastic platform playingfield
playing_field railing railroad river road rock roof rug salad sand sea shelf sky skyscraper snow stairs
stone straw table tent textile towel tree vegetable wall brick water waterdrop window blind wood
building floor ceiling road bed windowpane cabinet sidewalk earth door table mountain plant curtain
chair painting sofa shelf house sea mirror rug field armchair seat fence desk rock wardrobe lamp bathtub
railing cushion base box column signboard chest_of_drawers counter sand sink skyscraper fireplace
refrigerator grandstand path stairs runway case pool_table pillow screen_door stairway river bridge
bookcase blind coffee_table toilet flower book hill bench countertop stove palm_tree palm kitchen_island
computer swivel_chair boat bar arcade_machine hovel bus towel light truck tower chandelier awning
streetlight street_light booth television_receiver airplane dirt_track apparel pole land bannister
banister escalator ottoman bottle buffet poster stage van ship fountain conveyer_belt conveyor_belt
canopy washer washing_machine plaything toy swimming_pool pool stool barrel basket waterfall tent bag
minibike cradle oven ball food step tank trade_name microwave pot animal bicycle lake dishwasher screen
blanket sculpture statue hood sconce vase tray ashcan trash_can garbage_can fan pier monitor plate
bulletin_board shower radiator glass clock flag aeroplane bedclothes motorbike keyboard sign
track tvmonitor tv_monitor pottedplant diningtable traffic_sign vegetation terrain rider
"""

_CAPTION_NOUNS = """
man woman boy girl child kid baby toddler guy lady gentleman crowd player skier surfer
skateboarder snowboarder rider pitcher batter catcher umpire chef cook officer police_officer soldier
family couple friend team spectator student street city town park beach ocean shore wave lake pond
harbor dock field yard lawn garden forest woods kitchen bathroom bedroom living_room office restaurant
station train_station airport runway highway intersection parking_lot sidewalk alley court tennis_court
field slope snow hill desert farm zoo pasture barn market store shop sky sun moon cloud shirt t-shirt
jacket coat hat cap helmet dress suit uniform shoe boot glove sunglasses glasses scarf wetsuit jeans
pants shorts skirt sweater hoodie plane jet helicopter bike scooter taxi cab jeep tractor trailer wagon
cart carriage locomotive subway tram trolley sailboat canoe kayak yacht ferry table counter shelf
cabinet drawer sink faucet mirror tub shower_curtain toilet_seat towel rug lamp candle vase pot pan
kettle mug glass jar plate bowl tray napkin menu bag purse basket box umbrella kite ball racket bat
glove frisbee net goal surfboard board skateboard phone cellphone smartphone computer laptop screen
monitor keyboard mouse remote controller camera television radio speaker pizza sandwich burger hamburger
hot_dog donut cake cookie bread sandwich salad soup rice meat chicken steak fish egg cheese broccoli
carrot tomato potato onion pepper banana apple orange lemon grape strawberry fruit vegetable coffee tea
wine beer juice milk dessert pie dog puppy cat kitten horse pony cow calf sheep lamb goat pig bird duck
goose swan pigeon seagull elephant giraffe zebra bear teddy_bear lion tiger monkey deer tree bush flower
grass leaf plant rock stone wall fence gate door window roof tower clock pole sign bench statue fountain
bridge building house church castle tent flag banner poster painting picture_frame billboard lamp_post
light_pole fire_hydrant stop_sign traffic_light street_sign parking_meter bed pillow blanket sheet couch
sofa chair armchair desk bookshelf book
"""

_IRREGULAR_PLURALS = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "geese": "goose", "teeth": "tooth", "feet": "foot", "knives": "knife", "leaves": "leaf",
    "shelves": "shelf", "wolves": "wolf", "calves": "calf", "loaves": "loaf", "halves": "half",
    "scarves": "scarf", "oxen": "ox", "dice": "die", "policemen": "policeman", "firemen": "fireman",
    "gentlemen": "gentleman", "ladies": "lady", "fish": "fish", "sheep": "sheep", "deer": "deer",
    "bus": "bus", "buses": "bus", "glasses": "glasses", "benches": "bench", "boxes": "box",
    "dishes": "dish", "potatoes": "potato", "tomatoes": "tomato",
}

_MODIFIER_WORDS = frozenset({
    "orange", "light", "glass", "wood", "metal", "plastic", "paper", "stone", "brick", "marble",
    "cardboard", "straw", "cloth", "water", "snow", "rock", "gold", "silver", "ice", "sand", "grass",
    "leather", "wine", "food", "pizza", "cake", "flower", "fruit", "chicken", "cheese", "coffee", "tea",
    "kitchen", "bathroom", "bedroom", "office", "city", "street", "tennis", "baseball", "soccer", "police",
    "fire", "computer", "dining", "living", "parking", "train", "bus", "car", "toy", "baby", "teddy",
})
"""Lexicon words that are modifiers when directly followed by another noun or a colour word
("glass vase", "orange cat", "kitchen table", "light blue")."""

_COLOURS = frozenset({"red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black",
                      "white", "gray", "grey", "beige", "tan", "golden", "dark", "pale"})

_STOP_NOUNS = frozenset({"photo", "picture", "image", "view", "side", "top", "front", "back", "middle",
                         "couple", "group", "lot", "bunch", "pair", "piece", "variety", "number", "line",
                         "close", "closeup", "shot", "way", "day", "night", "time"})
"""Words never reported as nouns by the lexicon extractor (not visual objects in a caption)."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


MULTIWORD_NOUNS: tuple[str, ...] = (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
    "cell phone", "teddy bear", "hair drier", "hair dryer", "ceiling tile", "playing field",
    "chest of drawers", "pool table", "screen door", "coffee table", "palm tree", "kitchen island",
    "swivel chair", "arcade machine", "street light", "television receiver", "dirt track",
    "conveyer belt", "conveyor belt", "washing machine", "swimming pool", "trade name", "trash can",
    "garbage can", "bulletin board", "tv monitor", "traffic sign", "living room", "train station",
    "parking lot", "tennis court", "police officer", "shower curtain", "toilet seat", "picture frame",
    "lamp post", "light pole", "street sign", "t shirt", "ice cream", "cutting board", "soccer ball",
    "tennis ball", "tennis player", "baseball player", "fire truck", "double decker bus", "stuffed animal",
    "computer mouse", "cell phone", "bus stop", "side walk", "motor bike", "water bottle",
)


def default_lexicon() -> frozenset[str]:
    """The built-in nouns (singular, lower case; multi-word nouns with single spaces)."""
    blocks = (_DATASET_NOUNS, _CAPTION_NOUNS)
    words = {w.replace("_", " ").replace("-", " ") for block in blocks for w in block.split()}
    words |= set(MULTIWORD_NOUNS)
    return frozenset(w for w in words if w not in _STOP_NOUNS)


def singular_candidates(word: str) -> list[str]:
    """Possible singular forms of ``word``, most likely first (``word`` itself first)."""
    out = [word]
    if word in _IRREGULAR_PLURALS:
        out.append(_IRREGULAR_PLURALS[word])
    if len(word) > 3:
        if word.endswith("ies"):
            out.append(word[:-3] + "y")
        if word.endswith("ves"):
            out += [word[:-3] + "f", word[:-3] + "fe"]
        if word.endswith("es"):
            out.append(word[:-2])
        if word.endswith("s") and not word.endswith("ss"):
            out.append(word[:-1])
    return out


class LexiconNounExtractor:
    """Nouns found by greedy longest match against a lexicon of concrete nouns (no model needed).

    Args:
        lexicon: nouns (singular, lower case, words separated by single spaces); default
            :func:`default_lexicon`. ``extra`` nouns are added to it.
    """

    name = "lexicon"

    def __init__(self, lexicon: set[str] | frozenset[str] | None = None, extra: set[str] | None = None):
        words = set(default_lexicon() if lexicon is None else lexicon) | set(extra or ())
        self.lexicon = frozenset(" ".join(w.lower().split()) for w in words if w.strip())
        self.max_words = max(len(w.split()) for w in self.lexicon) if self.lexicon else 1

    def _lookup(self, words: list[str]) -> str | None:
        """The lexicon noun spelled by ``words`` (last word possibly plural), or ``None``."""
        head = words[:-1]
        for last in singular_candidates(words[-1]):
            candidate = " ".join([*head, last])
            if candidate in self.lexicon:
                return candidate
        return None

    def extract(self, caption: str) -> list[NounMention]:
        lowered = caption.lower()
        tokens = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(lowered)]
        words = [t[0] for t in tokens]
        mentions: list[NounMention] = []
        seen: set[str] = set()
        i = 0
        while i < len(tokens):
            match: tuple[str, int] | None = None
            for n in range(min(self.max_words, len(tokens) - i), 0, -1):
                noun = self._lookup(words[i:i + n])
                if noun is not None:
                    match = (noun, n)
                    break
            if match is None:
                i += 1
                continue
            noun, n = match
            if n == 1 and noun in _MODIFIER_WORDS and i + 1 < len(tokens) and self._is_modified(words, i + 1):
                i += 1
                continue
            if noun not in seen:
                seen.add(noun)
                start, end = tokens[i][1], tokens[i + n - 1][2]
                mentions.append(NounMention(noun=noun, start=start, end=end, text=caption[start:end]))
            i += n
        return mentions

    def _is_modified(self, words: list[str], j: int) -> bool:
        """Whether ``words[j]`` starts a noun or is a colour (so the word before it is a modifier)."""
        if words[j] in _COLOURS:
            return True
        return any(self._lookup(words[j:j + n]) is not None
                   for n in range(1, min(self.max_words, len(words) - j) + 1))


class SpacyNounExtractor:
    """Nouns as tagged by a spaCy pipeline: every ``NOUN`` token, reported by its lower-case lemma.

    Raises:
        ProtosegError: when spaCy or the model is not installed (the message says how to install them).
    """

    def __init__(self, model: str = "en_core_web_sm"):
        try:
            import spacy  # optional dependency (protoseg[nlp])
        except ImportError:
            raise ProtosegError("the 'spacy' noun extractor needs spaCy; install it with `pip install spacy` "
                                f"and the model with `python -m spacy download {model}`, or use "
                                "--nouns lexicon") from None
        try:
            self.nlp = spacy.load(model, disable=["ner", "textcat"])
        except OSError:
            raise ProtosegError(f"spaCy model {model!r} is not installed; run `python -m spacy download "
                                f"{model}` (or pip install its wheel), or use --nouns lexicon") from None
        self.name = f"spacy:{model}"

    def extract(self, caption: str) -> list[NounMention]:
        mentions: list[NounMention] = []
        seen: set[str] = set()
        for token in self.nlp(caption):
            if token.pos_ != "NOUN":
                continue
            noun = (token.lemma_ or token.text).lower()
            if noun in seen:
                continue
            seen.add(noun)
            start, end = token.idx, token.idx + len(token.text)
            mentions.append(NounMention(noun=noun, start=start, end=end, text=caption[start:end]))
        return mentions


NOUN_EXTRACTORS = ("lexicon", "spacy", "spacy:<model>")


def get_noun_extractor(name: str = "lexicon") -> NounExtractor:
    """``"lexicon"`` -> :class:`LexiconNounExtractor`; ``"spacy"`` / ``"spacy:<model>"`` ->
    :class:`SpacyNounExtractor` (default model ``en_core_web_sm``)."""
    kind, _, arg = name.partition(":")
    if kind == "lexicon" and not arg:
        return LexiconNounExtractor()
    if kind == "spacy":
        return SpacyNounExtractor(arg or "en_core_web_sm")
    raise ProtosegError(f"unknown noun extractor {name!r}; use one of {', '.join(NOUN_EXTRACTORS)}")


def caption_nouns(extractor: NounExtractor, captions: Sequence[Caption]) -> list[tuple[Caption, NounMention]]:
    """Every (caption, noun mention) pair, captions in order, nouns in order of first mention.

    One pair is one FreeDA (prototype, key) entry: the noun is localised in the image synthesised from
    the caption, and ``text_keys`` embeds it with the caption.
    """
    return [(caption, mention) for caption in captions for mention in extractor.extract(caption.text)]
