"""Places as travellers type them: codes, cities, airport names, typos, accents, nonsense."""

from __future__ import annotations

import airportsdata
import pytest

from services.flights.places import PlaceIndex, UnknownAirportError, normalize
from services.models import LocationKind


@pytest.fixture(scope="module")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("jfk", "JFK"),
        ("JFK", "JFK"),
        ("Lhr", "LHR"),
        ("lis", "LIS"),
        (" nrt ", "NRT"),
    ],
)
def test_an_iata_code_in_any_case_is_that_airport(
    places: PlaceIndex, typed: str, code: str
) -> None:
    result = places.resolve(typed)
    assert result.location is not None
    assert result.location.kind is LocationKind.AIRPORT
    assert result.location.code == code
    assert result.location.airports == (code,)
    assert result.match == "exact"


@pytest.mark.parametrize(
    ("typed", "code", "airports"),
    [
        ("lisbon", "LIS", ("LIS",)),
        ("LISBON", "LIS", ("LIS",)),
        ("Berlin", "BER", ("BER",)),
        ("Frankfurt am Main", "FRA", ("FRA",)),
        ("frankfurt", "FRA", ("FRA",)),
        ("barcelona", "BCN", ("BCN",)),
        ("Zürich", "ZRH", ("ZRH",)),
        ("zurich", "ZRH", ("ZRH",)),
        ("lisbon airport", "LIS", ("LIS",)),
    ],
)
def test_a_single_airport_city_resolves_to_that_city(
    places: PlaceIndex, typed: str, code: str, airports: tuple[str, ...]
) -> None:
    result = places.resolve(typed)
    assert result.location is not None, result
    assert result.location.code == code
    assert result.location.airports == airports
    assert result.location.kind is LocationKind.CITY


@pytest.mark.parametrize(
    ("typed", "metro", "must_include"),
    [
        ("London", "LON", {"LHR", "LGW", "STN", "LTN", "LCY"}),
        ("new york", "NYC", {"JFK", "LGA", "EWR"}),
        ("NYC", "NYC", {"JFK", "LGA", "EWR"}),
        ("paris", "PAR", {"CDG", "ORY"}),
        ("rome", "ROM", {"FCO", "CIA"}),
        ("Tokyo", "TYO", {"HND", "NRT"}),
        ("milan", "MIL", {"MXP", "LIN", "BGY"}),
        ("moscow", "MOW", {"SVO", "DME", "VKO"}),
        ("stockholm", "STO", {"ARN", "BMA"}),
        ("São Paulo", "SAO", {"GRU", "CGH"}),
        ("Sao Paulo", "SAO", {"GRU", "CGH"}),
        ("SAO PAULO", "SAO", {"GRU", "CGH"}),
    ],
)
def test_a_city_with_several_airports_offers_all_then_each(
    places: PlaceIndex, typed: str, metro: str, must_include: set[str]
) -> None:
    result = places.resolve(typed)
    assert result.location is None
    assert result.is_city_choice
    city, *airports = result.choices
    assert city.kind is LocationKind.CITY
    assert city.code == metro
    assert must_include <= set(city.airports)
    assert [a.code for a in airports] == list(city.airports)
    assert all(a.kind is LocationKind.AIRPORT for a in airports)
    assert "all airports" in city.label
    assert f"{len(city.airports)} airports" in result.prompt()


def test_new_york_includes_newark_although_the_dataset_files_it_under_newark(
    places: PlaceIndex,
) -> None:
    result = places.resolve("New York")
    assert "EWR" in result.choices[0].airports
    newark = places.resolve("newark")
    assert newark.location is not None
    assert newark.location.code == "EWR"


def test_a_city_name_that_is_also_another_airports_code_offers_both(places: PlaceIndex) -> None:
    result = places.resolve("Hue")  # Hue, Vietnam; HUE is Humera, Ethiopia
    assert [c.country for c in result.choices] == ["VN", "ET"]
    assert result.choices[1].code == "HUE"
    assert result.choices[1].kind is LocationKind.AIRPORT


def test_a_metro_code_resolves_to_the_whole_city(places: PlaceIndex) -> None:
    result = places.resolve("lon")
    assert result.choices[0].code == "LON"
    assert places.city_location("LON") == result.choices[0]


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("lisbn", "LIS"),
        ("frankfrut", "FRA"),
        ("barcelonna", "BCN"),
        ("amsterdm", "AMS"),
    ],
)
def test_small_typos_still_find_the_place(places: PlaceIndex, typed: str, code: str) -> None:
    result = places.resolve(typed)
    assert result.match == "fuzzy"
    assert result.location is not None, result
    assert result.location.code == code


def test_a_typo_of_a_multi_airport_city_offers_its_airports(places: PlaceIndex) -> None:
    result = places.resolve("londn")
    assert result.match == "fuzzy"
    assert result.choices[0].code == "LON"


@pytest.mark.parametrize(
    ("typed", "code"),
    [("heathrow", "LHR"), ("Schiphol", "AMS"), ("gatwick", "LGW"), ("Charles de Gaulle", "CDG")],
)
def test_an_airport_name_finds_that_airport(places: PlaceIndex, typed: str, code: str) -> None:
    result = places.resolve(typed)
    assert result.location is not None
    assert result.location.kind is LocationKind.AIRPORT
    assert result.location.code == code


def test_cities_sharing_a_name_are_offered_with_their_region(places: PlaceIndex) -> None:
    result = places.resolve("Portland")
    assert result.location is None
    assert not result.is_city_choice
    names = [c.name for c in result.choices]
    assert "Portland, Oregon" in names
    assert "Portland, Maine" in names
    assert all(c.kind is LocationKind.CITY for c in result.choices)
    assert "which one" in result.prompt()


@pytest.mark.parametrize(
    ("typed", "code"),
    [("Portland, Maine", "PWM"), ("portland oregon", "PDX"), ("Portland OR", "PDX")],
)
def test_a_region_picks_one_of_the_homonyms(places: PlaceIndex, typed: str, code: str) -> None:
    result = places.resolve(typed)
    assert result.location is not None
    assert code in result.location.airports


def test_a_world_city_wins_over_a_small_town_of_the_same_name(places: PlaceIndex) -> None:
    paris = places.resolve("Paris")
    assert paris.choices[0].code == "PAR"  # not Paris, Texas
    assert places.resolve("sydney").location is not None
    assert places.resolve("sydney").location.code == "SYD"  # type: ignore[union-attr]


@pytest.mark.parametrize("typed", ["qwxzvbn", "zzzzzzzzzz", "12345", "!!!", "'; drop table x"])
def test_nonsense_finds_nothing_and_says_so(places: PlaceIndex, typed: str) -> None:
    result = places.resolve(typed)
    assert result.location is None
    assert result.choices == []
    assert not result.found
    assert "couldn't find" in result.prompt()


def test_a_near_miss_suggests_the_closest_names(places: PlaceIndex) -> None:
    result = places.resolve("frank")
    assert result.location is None
    assert "Frankfurt" in result.suggestions
    assert "Did you mean" in result.prompt()


@pytest.mark.parametrize("typed", ["", " ", "x", "a" * 65, "London" * 20])
def test_empty_short_or_overlong_input_is_no_match(places: PlaceIndex, typed: str) -> None:
    result = places.resolve(typed)
    assert not result.found
    assert result.suggestions == []


def test_what_the_user_typed_is_escaped_in_the_prompt(places: PlaceIndex) -> None:
    result = places.resolve("<b>qqqqq</b>")
    assert "<b>qqqqq" not in result.prompt()
    assert "&lt;b&gt;" in result.prompt()


def test_heliports_and_military_fields_are_not_offered(places: PlaceIndex) -> None:
    rows = airportsdata.load("IATA")
    heliport = next(code for code, row in rows.items() if "Heliport" in row["name"])
    air_force = next(code for code, row in rows.items() if "Air Force Base" in row["name"])
    for code in (heliport, air_force):
        assert not places.is_passenger_airport(code)
        assert places.resolve(code).location is None or places.resolve(code).location.code != code  # type: ignore[union-attr]
        # ...but a provider may still fly there, so the airport itself is known with its zone.
        assert places.get(code).tz


def test_get_knows_every_airport_and_refuses_unknown_codes(places: PlaceIndex) -> None:
    lisbon = places.get("lis")
    assert lisbon.tz == "Europe/Lisbon"
    assert lisbon.country == "PT"
    with pytest.raises(UnknownAirportError):
        places.get("QQQ")
    assert places.find("QQQ") is None


def test_airport_of_turns_a_city_code_into_its_main_airport(places: PlaceIndex) -> None:
    assert places.airport_of("LON").iata == "LHR"  # type: ignore[union-attr]
    assert places.airport_of("jfk").iata == "JFK"  # type: ignore[union-attr]
    assert places.airport_of("QQQ") is None


def test_normalize_folds_case_accents_and_punctuation() -> None:
    assert normalize("São Paulo") == normalize("sao-paulo") == "sao paulo"
    assert normalize("  ZÜRICH!! ") == "zurich"
    assert normalize("Kraków") == "krakow"


def test_the_index_is_built_once_per_process() -> None:
    # How long building and resolving take is printed by benchmarks/search.py, not timed here.
    assert PlaceIndex.default() is PlaceIndex.default()
