"""Places as travellers type them: cities, airport names and IATA codes, with typos and accents.

The index is built once per process from ``airportsdata`` (IATA airports) and kept; building it
takes a fraction of a second, and it is only ever read afterwards.

Which airports count: the dataset lists every airport with an IATA code, including heliports,
seaplane bases, military fields, private strips and airports that closed. For name search we
keep airports that matter for passenger flights:

- a four-letter ICAO code (letters only; private US strips have codes such as ``07FA``);
- a name without heliport / seaplane / military / general-aviation markers (air force base,
  army, naval, coast guard, airpark, airstrip, executive, station...);
- not one of the airports closed to passengers that the dataset still lists (Tegel, Atatürk...).

``get`` still knows every airport in the dataset, because a provider may fly to one our filter
left out and its local times must still be right.

Cities: airports are grouped by their city name and country, and split where two groups of the
same name lie far apart (Portland, Oregon and Portland, Maine). The big multi-airport cities are
curated with their IATA metropolitan codes (LON, NYC, PAR...), because the dataset files some of
their airports under suburbs (Newark, Mississauga, Ezeiza) and lists small fields beside them.
For other cities "all airports" means the international ones when there are any, so a search
from Glasgow does not include a grass strip.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import airportsdata
import pycountry
from rapidfuzz import process
from rapidfuzz.distance import OSA

from services.flights.airlines import codes
from services.messages import esc
from services.models import Airport, Location, LocationKind

MAX_TEXT = 64  # longer input is not a place name
MIN_TEXT = 2
_FUZZY_ACCEPT = 0.8  # a typo close enough to take without asking (similarity 0..1)
_FUZZY_SUGGEST = 0.6  # close enough to offer as "did you mean"
_SUGGESTIONS = 5
_CITY_SPLIT_KM = 100.0  # same-named airports farther apart than this are different cities

_EXCLUDE_NAME = re.compile(
    r"heliport|seaplane|sea plane|water aerodrome|air force|\bafb\b|\barmy\b|naval|\bnavy\b|"
    r"marine corps|coast guard|\braf\b|military|air base|airbase|air station|under construction|"
    r"spaceport|\bstation\b|airpark|air park|airstrip|ultralight|glid|\branch\b|\bns\b|\bnas\b|"
    r"\bcgs\b|\bfap\b|executive",
    re.IGNORECASE,
)
_ICAO = re.compile(r"^[A-Z]{4}$")

# Closed to passenger traffic but still in the dataset.
_CLOSED = frozenset({"TXL", "ISL", "NAY", "BML"})

# The world's busiest and best-connected airports (a fixed list: the dataset has no traffic
# figures). They win a name shared with a smaller place ("Paris" is Paris, France) and are the
# hubs the demo provider connects through.
MAJOR_AIRPORTS = codes(
    """
    ATL DFW DEN ORD LAX JFK LAS MCO MIA CLT SEA PHX EWR SFO IAH BOS FLL MSP LGA DTW PHL SLC DCA
    SAN BWI TPA AUS IAD BNA MDW HNL YYZ YVR YUL YYC MEX CUN GDL MTY BOG LIM SCL GRU GIG BSB EZE
    PTY SJO CCS UIO MVD
    LHR LGW MAN STN EDI DUB CDG ORY AMS FRA MUC BER DUS HAM MAD BCN PMI AGP ALC VLC LIS OPO FAO
    FCO MXP LIN BGY VCE NAP CTA BLQ ZRH GVA VIE BRU CPH ARN OSL HEL WAW KRK PRG BUD OTP SOF ATH
    SKG IST SAW AYT ESB SVO DME VKO LED KBP RIX TLL VNO BEG ZAG NCE LYS MRS TLS BOD NTE BSL KEF
    LPA TFS ACE
    DXB AUH DOH BAH KWI MCT RUH JED DMM TLV AMM BEY CAI CMN RAK ALG TUN ADD NBO JNB CPT DUR LOS
    ACC DSS KGL DAR
    DEL BOM BLR MAA HYD CCU COK KHI LHE ISB DAC CMB KTM MLE
    SIN KUL BKK DMK HKT CGK DPS MNL SGN HAN HKG TPE MFM ICN GMP PUS NRT HND KIX ITM NGO FUK CTS
    OKA PEK PKX PVG SHA CAN SZX CTU TFU KMG XIY CKG HGH WUH NKG XMN TAO ULN ALA TAS GYD TBS EVN
    SYD MEL BNE PER ADL AKL CHC WLG NAN PPT
    """
)

# Intercontinental hubs: long-haul flights connect through them.
GLOBAL_HUBS = codes(
    """
    ATL DFW DEN ORD LAX JFK EWR SFO IAH MIA SEA BOS IAD YYZ YVR YUL MEX BOG LIM SCL GRU PTY
    LHR CDG AMS FRA MUC MAD FCO ZRH VIE CPH HEL IST LIS BCN DUB BRU WAW ARN OSL
    DXB AUH DOH ADD NBO JNB CAI CMN
    DEL BOM SIN KUL BKK HKG TPE ICN NRT HND PEK PKX PVG CAN CTU SYD MEL AKL MNL CGK
    """
)


@dataclass(frozen=True)
class _Metro:
    code: str
    name: str
    country: str
    airports: tuple[str, ...]
    aliases: tuple[str, ...] = ()


# IATA metropolitan areas (Kiwi uses the same codes), airports in the order travellers know them.
_METROS: tuple[_Metro, ...] = (
    _Metro("LON", "London", "GB", ("LHR", "LGW", "STN", "LTN", "LCY", "SEN")),
    _Metro("NYC", "New York", "US", ("JFK", "EWR", "LGA"), ("nyc", "new york city")),
    _Metro("PAR", "Paris", "FR", ("CDG", "ORY", "BVA")),
    _Metro("ROM", "Rome", "IT", ("FCO", "CIA"), ("roma",)),
    _Metro("TYO", "Tokyo", "JP", ("HND", "NRT")),
    _Metro("MIL", "Milan", "IT", ("MXP", "LIN", "BGY"), ("milano",)),
    _Metro("MOW", "Moscow", "RU", ("SVO", "DME", "VKO"), ("moskva",)),
    _Metro("STO", "Stockholm", "SE", ("ARN", "BMA", "NYO", "VST")),
    _Metro("WAS", "Washington", "US", ("IAD", "DCA", "BWI"), ("washington dc",)),
    _Metro("CHI", "Chicago", "US", ("ORD", "MDW")),
    _Metro("SAO", "São Paulo", "BR", ("GRU", "CGH", "VCP")),
    _Metro("RIO", "Rio de Janeiro", "BR", ("GIG", "SDU"), ("rio",)),
    _Metro("BUE", "Buenos Aires", "AR", ("EZE", "AEP")),
    _Metro("OSA", "Osaka", "JP", ("KIX", "ITM", "UKB")),
    _Metro("SEL", "Seoul", "KR", ("ICN", "GMP")),
    _Metro("BJS", "Beijing", "CN", ("PEK", "PKX"), ("peking",)),
    _Metro("SHA", "Shanghai", "CN", ("PVG", "SHA")),
    _Metro("IST", "Istanbul", "TR", ("IST", "SAW")),
    _Metro("YTO", "Toronto", "CA", ("YYZ", "YTZ")),
    _Metro("YMQ", "Montreal", "CA", ("YUL",), ("montréal",)),
    _Metro("YVR", "Vancouver", "CA", ("YVR",)),
    _Metro("JKT", "Jakarta", "ID", ("CGK", "HLP")),
    _Metro("REK", "Reykjavik", "IS", ("KEF", "RKV")),
    _Metro("HOU", "Houston", "US", ("IAH", "HOU")),
    _Metro("DFW", "Dallas", "US", ("DFW", "DAL"), ("dallas fort worth", "fort worth")),
    _Metro("DTT", "Detroit", "US", ("DTW",)),
    _Metro("BUH", "Bucharest", "RO", ("OTP",)),
    _Metro("BER", "Berlin", "DE", ("BER",)),
    _Metro("BKK", "Bangkok", "TH", ("BKK", "DMK")),
    _Metro("MEL", "Melbourne", "AU", ("MEL", "AVV")),
    _Metro("BRU", "Brussels", "BE", ("BRU", "CRL"), ("bruxelles",)),
    _Metro("VCE", "Venice", "IT", ("VCE", "TSF"), ("venezia",)),
    _Metro("GLA", "Glasgow", "GB", ("GLA", "PIK")),
    _Metro("BFS", "Belfast", "GB", ("BFS", "BHD")),
    _Metro("PTY", "Panama City", "PA", ("PTY",), ("panama",)),
    _Metro("FRA", "Frankfurt", "DE", ("FRA",), ("frankfurt am main",)),
    _Metro("TCI", "Tenerife", "ES", ("TFS", "TFN")),
    _Metro("MEX", "Mexico City", "MX", ("MEX",)),
)

# Dataset names that read badly as a city or airport name.
_CITY_NAMES = {"Sao Paulo": "São Paulo", "Rio De Janeiro": "Rio de Janeiro"}

# Airports whose dataset name makes a poor button label.
_DISPLAY: dict[str, str] = {
    "HND": "Tokyo Haneda",
    "NRT": "Tokyo Narita",
    "ITM": "Osaka Itami",
    "KIX": "Osaka Kansai",
    "FCO": "Rome Fiumicino",
    "CIA": "Rome Ciampino",
    "SEN": "London Southend",
    "BGY": "Milan Bergamo",
    "BVA": "Paris Beauvais",
    "ORY": "Paris Orly",
    "NYO": "Stockholm Skavsta",
    "VST": "Stockholm Västerås",
    "ARN": "Stockholm Arlanda",
    "BMA": "Stockholm Bromma",
    "MEL": "Melbourne Tullamarine",
    "IST": "Istanbul Airport",
    "IAH": "Houston Intercontinental",
    "HOU": "Houston Hobby",
    "DCA": "Washington Reagan National",
    "BWI": "Baltimore/Washington",
    "TFS": "Tenerife South",
    "TFN": "Tenerife North",
    "GRU": "São Paulo Guarulhos",
    "CGH": "São Paulo Congonhas",
    "VCP": "Campinas Viracopos",
    "LIS": "Lisbon Humberto Delgado",
    "OPO": "Porto Francisco Sá Carneiro",
    "LGA": "New York LaGuardia",
    "JFK": "New York JFK",
    "CRL": "Brussels Charleroi",
    "TSF": "Venice Treviso",
    "VCE": "Venice Marco Polo",
    "PEK": "Beijing Capital",
    "PKX": "Beijing Daxing",
    "EZE": "Buenos Aires Ezeiza",
    "AEP": "Buenos Aires Aeroparque",
    "DXB": "Dubai International",
    "GIG": "Rio de Janeiro Galeão",
}

# Names in other languages and old spellings, each meaning the city of the airport given.
_EXONYMS: dict[str, str] = {
    "kiev": "KBP", "munchen": "MUC", "koln": "CGN", "cologne": "CGN", "wien": "VIE",
    "praha": "PRG", "lisboa": "LIS", "firenze": "FLR", "napoli": "NAP", "torino": "TRN",
    "warszawa": "WAW", "krakow": "KRK", "sankt peterburg": "LED", "st petersburg": "LED",
    "saint petersburg": "LED", "nueva york": "JFK", "geneve": "GVA", "genf": "GVA",
    "kobenhavn": "CPH", "athina": "ATH", "athens": "ATH", "bombay": "BOM", "calcutta": "CCU",
    "madras": "MAA", "saigon": "SGN", "ho chi minh city": "SGN", "peking": "PEK",
    "canton": "CAN", "den haag": "RTM", "bucuresti": "OTP", "beograd": "BEG", "sevilla": "SVQ",
    "tiflis": "TBS", "mumbai": "BOM", "delhi": "DEL", "new delhi": "DEL", "hong kong": "HKG",
    "singapore": "SIN", "tel aviv": "TLV", "tel aviv yafo": "TLV",
}  # fmt: skip

_GENERIC_WORDS = codes(
    "airport aeropuerto aeroporto aeroport aéroport flughafen lufthavn lotnisko intl international "
    "intcntl ntl the of de"
)

PlaceMatch = Literal["exact", "fuzzy", "none"]


_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_FOLD = str.maketrans({"ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "đ": "d", "ı": "i", "œ": "oe"})


def normalize(text: str) -> str:
    """Fold case, accents and punctuation so 'São Paulo', 'sao-paulo' and 'SAO PAULO' agree."""
    if text.isascii():
        folded = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_ALNUM.sub(" ", folded).strip()


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) on a spherical Earth."""
    radius = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * radius * math.asin(min(1.0, math.sqrt(a)))


def airport_distance_km(a: Airport, b: Airport) -> float:
    return distance_km(a.lat, a.lon, b.lat, b.lon)


@dataclass(frozen=True)
class PlaceResolution:
    """What a typed place means: one place, a choice to offer, or nothing (with suggestions)."""

    text: str
    location: Location | None = None
    choices: list[Location] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    match: PlaceMatch = "none"

    @property
    def found(self) -> bool:
        return self.location is not None or bool(self.choices)

    @property
    def is_city_choice(self) -> bool:
        """The choices are one city's 'all airports' followed by each of its airports."""
        return (
            len(self.choices) > 1
            and self.choices[0].kind is LocationKind.CITY
            and all(c.kind is LocationKind.AIRPORT for c in self.choices[1:])
            and {c.code for c in self.choices[1:]} <= set(self.choices[0].airports)
        )

    def prompt(self) -> str:
        """A one-line, HTML-escaped question or refusal for the traveller."""
        if self.location is not None:
            return esc(self.location.label)
        if self.is_city_choice:
            city = self.choices[0]
            count = len(city.airports)
            return f"{esc(city.name)} has {count} airports: search them all or pick one."
        if self.choices:
            return f"Several places match “{esc(self.text.strip())}”: which one?"
        shown = esc(self.text.strip()[:40]) or "that"
        if self.suggestions:
            names = ", ".join(esc(s) for s in self.suggestions)
            return f"I couldn't find “{shown}”. Did you mean {names}?"
        return f"I couldn't find “{shown}”. Type a city, an airport or a code, e.g. Berlin or BER."


@dataclass
class _City:
    name: str
    country: str
    subd: str
    airports: list[str]  # all airports filed under the city, best first
    code: str = ""
    metro: bool = False
    searched: tuple[str, ...] = ()  # airports an "all airports" search covers
    qualifier: str = ""
    score: float = 0.0

    def location(self, *, qualified: bool = False) -> Location:
        qualifier = self.qualifier or _country_name(self.country)
        name = f"{self.name}, {qualifier}" if qualified else self.name
        return Location(
            code=self.code,
            name=name,
            kind=LocationKind.CITY,
            country=self.country,
            airports=self.searched,
        )


@dataclass
class _Target:
    cities: list[int] = field(default_factory=list)
    airports: list[str] = field(default_factory=list)


class UnknownAirportError(KeyError):
    """An IATA code that no airport in the dataset has."""


class PlaceIndex:
    """Every passenger airport and city, searchable by code, name or a near miss."""

    def __init__(self, rows: Mapping[str, Mapping[str, object]]) -> None:
        self._all: dict[str, Airport] = {}
        self._display: dict[str, str] = {}
        self._tier: dict[str, int] = {}
        raw_city: dict[str, str] = {}
        subd: dict[str, str] = {}
        for code, row in rows.items():
            airport = _airport_from_row(code, row)
            if airport is None:
                continue
            self._all[airport.iata] = airport
            raw_city[airport.iata] = str(row.get("city") or "")
            subd[airport.iata] = str(row.get("subd") or "")
        self._passenger = frozenset(
            code for code, row in rows.items() if code in self._all and _is_passenger(code, row)
        )
        for code in self._passenger:
            name = self._all[code].name
            tier = 3 if code in MAJOR_AIRPORTS else 2 if _is_international(name) else 1
            self._tier[code] = tier

        self._cities: list[_City] = []
        self._city_of: dict[str, int] = {}  # airport -> city whose "all airports" includes it
        self._city_by_code: dict[str, int] = {}
        self._keys: dict[str, _Target] = defaultdict(_Target)
        self._build_cities(raw_city, subd)
        self._build_airport_keys(raw_city)
        for alias, code in _EXONYMS.items():
            index = self._city_of.get(code)
            if index is not None and index not in self._keys[alias].cities:
                self._keys[alias].cities.append(index)
        self._key_list = list(self._keys)

    # construction ------------------------------------------------------------------------------
    @classmethod
    @cache
    def default(cls) -> PlaceIndex:
        """The process-wide index, built on first use (not at import)."""
        return cls(airportsdata.load("IATA"))

    def _build_cities(self, raw_city: dict[str, str], subd: dict[str, str]) -> None:
        in_metro: set[str] = set()
        for metro in _METROS:
            members = [a for a in metro.airports if a in self._passenger]
            if not members:
                continue
            city = _City(
                name=metro.name,
                country=metro.country,
                subd=subd.get(members[0], ""),
                airports=members,
                code=metro.code,
                metro=True,
                searched=tuple(members),
            )
            index = self._add_city(city)
            in_metro.update(members)
            for alias in (metro.name, *metro.aliases):
                self._keys[normalize(alias)].cities.append(index)
            for member in members:
                # "Newark", "Mississauga": the dataset's own city for the airport still finds it.
                own = _primary_city(raw_city.get(member, ""))
                if own and normalize(own) != normalize(metro.name):
                    self._keys[normalize(own)].airports.append(member)
                self._all[member] = self._all[member].model_copy(update={"city": metro.name})

        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for code in sorted(self._passenger - in_metro):
            city_name = _primary_city(raw_city.get(code, ""))
            if city_name:
                groups[(normalize(city_name), self._all[code].country)].append(code)

        metro_by_key = {
            (normalize(self._cities[i].name), self._cities[i].country): i
            for i in range(len(self._cities))
        }
        secondary: list[tuple[str, int]] = []
        for (key, country), members in groups.items():
            for cluster in self._clusters(members):
                metro_index = metro_by_key.get((key, country))
                if metro_index is not None and self._near_city(cluster, metro_index):
                    continue  # leftover fields of a curated metro stay reachable by name only
                cluster.sort(key=lambda c: (-self._tier[c], c))
                best = cluster[0]
                top = [c for c in cluster if self._tier[c] >= 2]
                searched = tuple(top) if top else (best,)
                primary = _primary_city(raw_city[best])
                city = _City(
                    name=_CITY_NAMES.get(primary, primary),
                    country=country,
                    subd=subd.get(best, ""),
                    airports=cluster,
                    code=best,
                    searched=searched,
                )
                index = self._add_city(city)
                self._keys[key].cities.append(index)
                secondary.extend(
                    (normalize(part), index) for part in _city_parts(raw_city[best])[1:]
                )
        # "Raleigh/Durham" is also found as "Durham", unless a city of that name exists already.
        for key, index in secondary:
            if not self._keys[key].cities:
                self._keys[key].cities.append(index)

        for city in self._cities:
            city.score = max(self._tier[a] for a in city.airports) + (1.0 if city.metro else 0.0)
        self._qualify_homonyms()

    def _add_city(self, city: _City) -> int:
        index = len(self._cities)
        self._cities.append(city)
        for code in city.searched:
            self._city_of.setdefault(code, index)
        if city.metro:
            self._city_by_code[city.code] = index
        return index

    def _clusters(self, codes: list[str]) -> list[list[str]]:
        clusters: list[list[str]] = []
        for code in codes:
            here = self._all[code]
            home = next(
                (
                    c
                    for c in clusters
                    if any(airport_distance_km(here, self._all[o]) <= _CITY_SPLIT_KM for o in c)
                ),
                None,
            )
            if home is None:
                clusters.append([code])
            else:
                home.append(code)
        return clusters

    def _near_city(self, codes: list[str], city_index: int) -> bool:
        city = self._cities[city_index]
        return any(
            airport_distance_km(self._all[a], self._all[b]) <= _CITY_SPLIT_KM
            for a in codes
            for b in city.airports
        )

    def _qualify_homonyms(self) -> None:
        by_name: dict[str, list[_City]] = defaultdict(list)
        for city in self._cities:
            by_name[normalize(city.name)].append(city)
        for cities in by_name.values():
            if len(cities) < 2:
                continue
            countries = [c.country for c in cities]
            for city in cities:
                same_country = countries.count(city.country) > 1
                if same_country or city.country in {"US", "CA", "AU", "BR"}:
                    region = city.subd or _country_name(city.country)
                    city.qualifier = (
                        region if same_country else f"{region}, {_country_name(city.country)}"
                    )
                    if city.country == "US" and not same_country:
                        city.qualifier = f"{region}, USA"
                else:
                    city.qualifier = _country_name(city.country)

    def _build_airport_keys(self, raw_city: dict[str, str]) -> None:
        for code in self._passenger:
            airport = self._all[code]
            self._display[code] = _DISPLAY.get(code) or _display_name(airport.name, airport.city)
            for alias in _airport_aliases(airport.name, raw_city.get(code, "")):
                target = self._keys[alias]
                if code not in target.airports:
                    target.airports.append(code)

    # lookups -----------------------------------------------------------------------------------
    def get(self, iata: str) -> Airport:
        """The airport with this IATA code, from the whole dataset."""
        airport = self._all.get(iata.strip().upper()) if isinstance(iata, str) else None
        if airport is None:
            raise UnknownAirportError(iata)
        return airport

    def find(self, iata: str) -> Airport | None:
        try:
            return self.get(iata)
        except UnknownAirportError:
            return None

    def airport_of(self, code: str) -> Airport | None:
        """The airport a code stands for: itself, or a metropolitan code's main airport."""
        code = code.strip().upper()
        index = self._city_by_code.get(code)
        if code in self._all:
            return self._all[code]
        if index is not None:
            return self._all[self._cities[index].airports[0]]
        return None

    def is_passenger_airport(self, iata: str) -> bool:
        return iata.strip().upper() in self._passenger

    def tier(self, iata: str) -> int:
        """3: major airport; 2: international; 1: other passenger airport; 0: not listed."""
        return self._tier.get(iata.strip().upper(), 0)

    def city_location(self, code: str) -> Location | None:
        """A metropolitan code's city (LON, NYC) with every airport searched."""
        index = self._city_by_code.get(code.strip().upper())
        return None if index is None else self._cities[index].location()

    def city_name(self, iata: str) -> str:
        """Name of the city an airport serves, for display ("Frankfurt", "New York")."""
        index = self._city_of.get(iata.strip().upper())
        if index is not None:
            return self._cities[index].name
        airport = self.find(iata)
        return airport.city if airport else iata

    def airport_location(self, iata: str) -> Location:
        airport = self.get(iata)
        return Location(
            code=airport.iata,
            name=self._display.get(airport.iata) or _display_name(airport.name, airport.city),
            kind=LocationKind.AIRPORT,
            country=airport.country,
            airports=(airport.iata,),
        )

    def passenger_airports(self) -> list[Airport]:
        return [self._all[c] for c in sorted(self._passenger)]

    # resolution --------------------------------------------------------------------------------
    def resolve(self, text: str) -> PlaceResolution:
        """Read what a traveller typed as a place. Never raises."""
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            return PlaceResolution(text=text if isinstance(text, str) else "")
        key = normalize(text)
        if len(key.replace(" ", "")) < MIN_TEXT:
            return PlaceResolution(text=text)

        if re.fullmatch(r"[a-z]{3}", key):
            by_code = self._resolve_code(text, key.upper())
            by_name = self._keys.get(key)
            if by_code is not None and by_code.location is not None and by_name is not None:
                # "Hue" is a city in Vietnam and the code of Humera, Ethiopia: offer both.
                named = [
                    self._cities[i].location(qualified=True)
                    for i in by_name.cities
                    if key.upper() not in self._cities[i].searched
                ]
                if named:
                    return PlaceResolution(
                        text=text, choices=[*named, by_code.location], match="exact"
                    )
            if by_code is not None:
                return by_code

        exact = self._resolve_key(text, key, "exact")
        if exact is not None:
            return exact
        qualified = self._resolve_qualified(text, key)
        if qualified is not None:
            return qualified
        return self._resolve_fuzzy(text, key)

    def _resolve_code(self, text: str, code: str) -> PlaceResolution | None:
        if code in self._passenger:
            return PlaceResolution(text=text, location=self.airport_location(code), match="exact")
        index = self._city_by_code.get(code)
        if index is not None:
            return self._city_result(text, index, "exact")
        return None

    def _resolve_key(self, text: str, key: str, how: PlaceMatch) -> PlaceResolution | None:
        target = self._keys.get(key)
        if target is None:
            for suffix in (" airports", " airport", " all airports", " city"):
                if key.endswith(suffix) and key[: -len(suffix)] in self._keys:
                    target = self._keys[key[: -len(suffix)]]
                    break
        if target is None:
            return None
        if target.cities:
            return self._cities_result(text, target.cities, how)
        return self._airports_result(text, target.airports, how)

    def _resolve_qualified(self, text: str, key: str) -> PlaceResolution | None:
        """'Portland, Maine', 'London UK', 'paris france': a place narrowed by region."""
        parts = [p for p in re.split(r",", text) if p.strip()]
        candidates: list[tuple[str, str]] = []
        if len(parts) >= 2:
            candidates.append((normalize(parts[0]), normalize(" ".join(parts[1:]))))
        words = key.split()
        for cut in range(len(words) - 1, 0, -1):
            candidates.append((" ".join(words[:cut]), " ".join(words[cut:])))
        for place, region in candidates:
            target = self._keys.get(place)
            if target is None or not region:
                continue
            cities = [i for i in target.cities if self._region_matches(self._cities[i], region)]
            if cities:
                return self._cities_result(text, cities, "exact", rank=False)
            airports = [a for a in target.airports if _region_matches_airport(self._all[a], region)]
            if airports:
                return self._airports_result(text, airports, "exact")
        return None

    def _region_matches(self, city: _City, region: str) -> bool:
        return region in _region_names(city.country, city.subd)

    def _resolve_fuzzy(self, text: str, key: str) -> PlaceResolution:
        # Optimal string alignment: a swapped pair of letters ("frankfrut") is one typo, not two.
        hits = process.extract(
            key,
            self._key_list,
            scorer=OSA.normalized_similarity,
            limit=12,
            score_cutoff=_FUZZY_SUGGEST,
        )
        if not hits:
            return PlaceResolution(text=text, suggestions=self._suggest(key, []))
        best_score = hits[0][1]
        if best_score >= _FUZZY_ACCEPT:
            close = [h[0] for h in hits if h[1] >= best_score - 0.05]
            chosen = self._dominant_key(close)
            if chosen is not None:
                result = self._resolve_key(text, chosen, "fuzzy")
                if result is not None:
                    return result
        return PlaceResolution(text=text, suggestions=self._suggest(key, hits))

    def _suggest(self, key: str, hits: list[tuple[str, float, int]]) -> list[str]:
        """Places the text starts (most important first), then the closest spellings."""
        starts: list[str] = []
        if len(key) >= 3:
            starts = [k for k in self._key_list if k.startswith(key) and k != key]
            starts.sort(key=lambda k: (-self._key_weight(k), len(k)))
        close = [h[0] for h in sorted(hits, key=lambda h: (-h[1], -self._key_weight(h[0])))]
        names: list[str] = []
        seen: set[str] = set()
        for hit_key in starts[:8] + close:
            for airports, name in self._names_for(hit_key):
                if name not in names and not airports & seen:
                    names.append(name)
                seen |= airports
        return names[:_SUGGESTIONS]

    def _dominant_key(self, keys: list[str]) -> str | None:
        """Of near-equal typo matches, the one for a clearly more important place, if any."""
        if len(keys) == 1:
            return keys[0]
        ranked = sorted(((self._key_weight(k), k) for k in keys), reverse=True)
        if ranked[0][0] - ranked[1][0] >= 1:
            return ranked[0][1]
        return None

    def _key_weight(self, key: str) -> float:
        target = self._keys[key]
        weights = [self._cities[i].score for i in target.cities]
        weights += [float(self._tier[a]) for a in target.airports]
        return max(weights, default=0.0)

    def _names_for(self, key: str) -> list[tuple[set[str], str]]:
        """The place a key stands for, as (its airports, its name)."""
        target = self._keys[key]
        if target.cities:
            city = self._cities[target.cities[0]]
            return [(set(city.searched), city.name)]
        return [({a}, self._display[a]) for a in target.airports[:1]]

    def _cities_result(
        self, text: str, indexes: list[int], how: PlaceMatch, *, rank: bool = True
    ) -> PlaceResolution:
        unique = list(dict.fromkeys(indexes))
        unique.sort(key=lambda i: (-self._cities[i].score, self._cities[i].name))
        if len(unique) == 1 or (
            rank and self._cities[unique[0]].score - self._cities[unique[1]].score >= 1
        ):
            return self._city_result(text, unique[0], how)
        return PlaceResolution(
            text=text,
            choices=[self._cities[i].location(qualified=True) for i in unique[:8]],
            match=how,
        )

    def _city_result(self, text: str, index: int, how: PlaceMatch) -> PlaceResolution:
        city = self._cities[index]
        if len(city.searched) == 1:
            return PlaceResolution(text=text, location=city.location(), match=how)
        airports = [self.airport_location(a) for a in city.searched]
        return PlaceResolution(text=text, choices=[city.location(), *airports], match=how)

    def _airports_result(self, text: str, codes: list[str], how: PlaceMatch) -> PlaceResolution:
        unique = sorted(dict.fromkeys(codes), key=lambda c: (-self._tier[c], c))
        if len(unique) == 1:
            return PlaceResolution(text=text, location=self.airport_location(unique[0]), match=how)
        return PlaceResolution(
            text=text, choices=[self.airport_location(c) for c in unique[:8]], match=how
        )


# helpers ---------------------------------------------------------------------------------------
def _airport_from_row(code: str, row: Mapping[str, object]) -> Airport | None:
    try:
        city = _primary_city(str(row.get("city") or ""))
        name = str(row.get("name") or code)
        return Airport(
            iata=code,
            name=name,
            city=_CITY_NAMES.get(city, city) or _display_name(name, ""),
            country=str(row.get("country") or ""),
            tz=str(row.get("tz") or "UTC"),
            lat=float(row.get("lat") or 0.0),  # type: ignore[arg-type]
            lon=float(row.get("lon") or 0.0),  # type: ignore[arg-type]
        )
    except (ValueError, TypeError):
        return None


def _is_passenger(code: str, row: Mapping[str, object]) -> bool:
    if code in _CLOSED:
        return False
    if not _ICAO.match(str(row.get("icao") or "")):
        return False
    return not _EXCLUDE_NAME.search(str(row.get("name") or ""))


def _is_international(name: str) -> bool:
    return bool(re.search(r"\b(international|intl|intcntl)\b", name, re.IGNORECASE))


def _city_parts(raw: str) -> list[str]:
    """'Raleigh/Durham' -> ['Raleigh', 'Durham']; 'Arnavutköy, Istanbul' -> ['Istanbul', ...]."""
    if "," in raw:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        parts.reverse()
    else:
        parts = [p.strip() for p in raw.split("/") if p.strip()]
    return parts


def _primary_city(raw: str) -> str:
    parts = _city_parts(raw)
    return parts[0] if parts else ""


def _display_name(name: str, city: str) -> str:
    """'London Heathrow Airport' -> 'London Heathrow'; 'Charles de Gaulle ...' -> 'Paris Charles
    de Gaulle': short enough for a button, and it says which city."""
    short = re.split(r"\s+-\s+|\s*/\s*", name)[0] if " - " in name or "/" in name else name
    short = re.sub(r"\b(International|Intl|Intcntl|Ntl)\b\s*Airport\b|\bAirport\b", "", short)
    short = re.sub(r"\s+(International|Intl|Intcntl|Ntl)$", "", " ".join(short.split()))
    short = short.strip() or name
    city_words = normalize(city).split()
    if city_words and city_words[0] not in normalize(short).split():
        short = f"{city} {short}"
    return short if len(short) <= 40 else short[:39].rstrip() + "…"


def _airport_aliases(name: str, raw_city: str) -> set[str]:
    aliases: set[str] = set()
    full = normalize(name)
    aliases.add(full)
    inner = re.findall(r"\(([^)]*)\)", name)
    aliases.update(normalize(i) for i in inner)
    without_parens = normalize(re.sub(r"\([^)]*\)", " ", name))
    for variant in (full, without_parens):
        words = [w for w in variant.split() if w not in _GENERIC_WORDS]
        core = " ".join(words)
        if core:
            aliases.add(core)
        city_words = set(normalize(raw_city).split())
        distinctive = " ".join(w for w in words if w not in city_words)
        if len(distinctive) >= 4:
            aliases.add(distinctive)
    for part in re.split(r"\s+-\s+|\s*/\s*", name):
        words = [w for w in normalize(part).split() if w not in _GENERIC_WORDS]
        if len(" ".join(words)) >= 4:
            aliases.add(" ".join(words))
    return {a for a in aliases if len(a) >= 3}


@cache
def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    return str(getattr(country, "common_name", None) or country.name)


@cache
def _region_names(country: str, subd: str) -> frozenset[str]:
    names = {normalize(country), normalize(_country_name(country))}
    record = pycountry.countries.get(alpha_2=country)
    if record is not None:
        names.add(normalize(record.name))
        names.add(normalize(record.alpha_3))
        official = getattr(record, "official_name", None)
        if official:
            names.add(normalize(official))
    names.update(_COUNTRY_ALIASES.get(country, ()))
    if subd:
        names.add(normalize(subd))
        abbreviation = _US_STATES.get(normalize(subd))
        if abbreviation and country == "US":
            names.add(abbreviation)
    return frozenset(n for n in names if n)


def _region_matches_airport(airport: Airport, region: str) -> bool:
    return region in _region_names(airport.country, "")


_COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "GB": ("uk", "england", "scotland", "wales", "britain", "great britain"),
    "US": ("usa", "us", "america", "united states"),
    "AE": ("uae", "emirates"),
    "NL": ("holland", "the netherlands"),
    "KR": ("korea", "south korea"),
    "RU": ("russia",),
    "CZ": ("czech republic", "czechia"),
    "TR": ("turkey", "turkiye"),
}

_US_STATES = {
    normalize(name): abbr.lower()
    for name, abbr in (
        ("Alabama", "AL"), ("Alaska", "AK"), ("Arizona", "AZ"), ("Arkansas", "AR"),
        ("California", "CA"), ("Colorado", "CO"), ("Connecticut", "CT"), ("Delaware", "DE"),
        ("Florida", "FL"), ("Georgia", "GA"), ("Hawaii", "HI"), ("Idaho", "ID"),
        ("Illinois", "IL"), ("Indiana", "IN"), ("Iowa", "IA"), ("Kansas", "KS"),
        ("Kentucky", "KY"), ("Louisiana", "LA"), ("Maine", "ME"), ("Maryland", "MD"),
        ("Massachusetts", "MA"), ("Michigan", "MI"), ("Minnesota", "MN"), ("Mississippi", "MS"),
        ("Missouri", "MO"), ("Montana", "MT"), ("Nebraska", "NE"), ("Nevada", "NV"),
        ("New Hampshire", "NH"), ("New Jersey", "NJ"), ("New Mexico", "NM"), ("New York", "NY"),
        ("North Carolina", "NC"), ("North Dakota", "ND"), ("Ohio", "OH"), ("Oklahoma", "OK"),
        ("Oregon", "OR"), ("Pennsylvania", "PA"), ("Rhode Island", "RI"),
        ("South Carolina", "SC"), ("South Dakota", "SD"), ("Tennessee", "TN"), ("Texas", "TX"),
        ("Utah", "UT"), ("Vermont", "VT"), ("Virginia", "VA"), ("Washington", "WA"),
        ("West Virginia", "WV"), ("Wisconsin", "WI"), ("Wyoming", "WY"),
    )
}  # fmt: skip
