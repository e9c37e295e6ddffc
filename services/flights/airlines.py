"""Airlines: display names, and who plausibly flies where (for demo fares).

Fixed data, not a schedule: the demo provider uses it so a Lisbon-Frankfurt flight is TAP or
Lufthansa rather than an airline from the other side of the world.
"""

from __future__ import annotations


def codes(text: str) -> frozenset[str]:
    """A set of codes written as one whitespace-separated block (easier to read and diff)."""
    return frozenset(text.split())


AIRLINE_NAMES: dict[str, str] = {
    # Europe
    "TP": "TAP Air Portugal", "LH": "Lufthansa", "LX": "Swiss", "OS": "Austrian",
    "SN": "Brussels Airlines", "AF": "Air France", "KL": "KLM", "BA": "British Airways",
    "IB": "Iberia", "VY": "Vueling", "UX": "Air Europa", "AZ": "ITA Airways", "SK": "SAS",
    "AY": "Finnair", "LO": "LOT Polish Airlines", "OK": "Czech Airlines", "EI": "Aer Lingus",
    "TK": "Turkish Airlines", "PC": "Pegasus", "A3": "Aegean", "RO": "TAROM",
    "FB": "Bulgaria Air", "JU": "Air Serbia", "OU": "Croatia Airlines", "BT": "airBaltic",
    "FI": "Icelandair", "DY": "Norwegian", "FR": "Ryanair", "U2": "easyJet",
    "W6": "Wizz Air", "EW": "Eurowings", "HV": "Transavia", "LS": "Jet2", "SU": "Aeroflot",
    "S7": "S7 Airlines", "PS": "Ukraine International", "DE": "Condor",
    # Middle East and Africa
    "EK": "Emirates", "QR": "Qatar Airways", "EY": "Etihad", "GF": "Gulf Air",
    "WY": "Oman Air", "SV": "Saudia", "RJ": "Royal Jordanian", "LY": "El Al",
    "ME": "Middle East Airlines", "MS": "EgyptAir", "AT": "Royal Air Maroc",
    "ET": "Ethiopian Airlines", "KQ": "Kenya Airways", "SA": "South African Airways",
    "FA": "FlySafair", "WB": "RwandAir", "P4": "Air Peace", "AH": "Air Algérie",
    "TU": "Tunisair", "FZ": "flydubai", "G9": "Air Arabia", "KU": "Kuwait Airways",
    # Americas
    "AA": "American Airlines", "DL": "Delta", "UA": "United", "WN": "Southwest",
    "B6": "JetBlue", "AS": "Alaska Airlines", "NK": "Spirit", "F9": "Frontier",
    "AC": "Air Canada", "WS": "WestJet", "AM": "Aeroméxico", "Y4": "Volaris",
    "CM": "Copa Airlines", "AV": "Avianca", "LA": "LATAM", "G3": "GOL", "AD": "Azul",
    "AR": "Aerolíneas Argentinas", "H2": "SKY Airline", "HA": "Hawaiian Airlines",
    # Asia and Oceania
    "JL": "Japan Airlines", "NH": "ANA", "KE": "Korean Air", "OZ": "Asiana",
    "CX": "Cathay Pacific", "SQ": "Singapore Airlines", "TR": "Scoot", "TG": "Thai Airways",
    "FD": "Thai AirAsia", "MH": "Malaysia Airlines", "AK": "AirAsia", "GA": "Garuda Indonesia",
    "QZ": "Indonesia AirAsia", "PR": "Philippine Airlines", "5J": "Cebu Pacific",
    "VN": "Vietnam Airlines", "VJ": "VietJet", "CI": "China Airlines", "BR": "EVA Air",
    "CA": "Air China", "MU": "China Eastern", "CZ": "China Southern", "HU": "Hainan Airlines",
    "AI": "Air India", "6E": "IndiGo", "UK": "Vistara", "UL": "SriLankan Airlines",
    "PK": "PIA", "BG": "Biman", "KC": "Air Astana", "HY": "Uzbekistan Airways",
    "J2": "Azerbaijan Airlines", "QF": "Qantas", "VA": "Virgin Australia", "JQ": "Jetstar",
    "NZ": "Air New Zealand", "FJ": "Fiji Airways", "MM": "Peach", "GK": "Jetstar Japan",
    "7C": "Jeju Air", "HX": "Hong Kong Airlines", "ZH": "Shenzhen Airlines",
    "3U": "Sichuan Airlines",
}  # fmt: skip

# The carrier whose hub an airport is: connections through it are flown by that airline.
HUB_CARRIERS: dict[str, str] = {
    "LHR": "BA", "LGW": "BA", "CDG": "AF", "ORY": "AF", "AMS": "KL", "FRA": "LH", "MUC": "LH",
    "ZRH": "LX", "GVA": "LX", "VIE": "OS", "BRU": "SN", "MAD": "IB", "BCN": "VY", "LIS": "TP",
    "OPO": "TP", "FCO": "AZ", "CPH": "SK", "ARN": "SK", "OSL": "SK", "HEL": "AY", "WAW": "LO",
    "DUB": "EI", "IST": "TK", "SAW": "PC", "ATH": "A3", "KEF": "FI", "RIX": "BT",
    "BEG": "JU", "OTP": "RO", "SVO": "SU", "LED": "SU",
    "DXB": "EK", "DOH": "QR", "AUH": "EY", "BAH": "GF", "MCT": "WY", "RUH": "SV", "JED": "SV",
    "AMM": "RJ", "TLV": "LY", "BEY": "ME", "CAI": "MS", "CMN": "AT", "ADD": "ET", "NBO": "KQ",
    "JNB": "SA", "KGL": "WB",
    "ATL": "DL", "DTW": "DL", "MSP": "DL", "SLC": "DL", "JFK": "DL", "LGA": "DL", "BOS": "B6",
    "ORD": "UA", "EWR": "UA", "IAH": "UA", "DEN": "UA", "SFO": "UA", "IAD": "UA", "LAX": "AA",
    "DFW": "AA", "MIA": "AA", "CLT": "AA", "PHL": "AA", "PHX": "AA", "SEA": "AS",
    "YYZ": "AC", "YUL": "AC", "YVR": "AC", "YYC": "WS", "MEX": "AM", "PTY": "CM",
    "BOG": "AV", "LIM": "LA", "SCL": "LA", "GRU": "LA", "GIG": "G3", "EZE": "AR",
    "HND": "NH", "NRT": "JL", "KIX": "JL", "ICN": "KE", "HKG": "CX", "SIN": "SQ",
    "BKK": "TG", "KUL": "MH", "CGK": "GA", "MNL": "PR", "SGN": "VN", "HAN": "VN", "TPE": "BR",
    "PEK": "CA", "PKX": "MU", "PVG": "MU", "CAN": "CZ", "CTU": "3U", "SZX": "ZH",
    "DEL": "AI", "BOM": "AI", "BLR": "6E", "CMB": "UL", "ALA": "KC", "TAS": "HY",
    "GYD": "J2", "SYD": "QF", "MEL": "QF", "BNE": "VA", "PER": "QF", "AKL": "NZ", "NAN": "FJ",
}  # fmt: skip

# Airlines based in a country (flag carrier first), for direct flights from or to it.
COUNTRY_CARRIERS: dict[str, tuple[str, ...]] = {
    "PT": ("TP",), "ES": ("IB", "UX", "VY"), "FR": ("AF",), "DE": ("LH", "EW", "DE"),
    "GB": ("BA", "LS"), "IE": ("EI",), "NL": ("KL", "HV"), "BE": ("SN",), "CH": ("LX",),
    "AT": ("OS",), "IT": ("AZ",), "DK": ("SK",), "SE": ("SK",), "NO": ("SK", "DY"),
    "FI": ("AY",), "PL": ("LO",), "CZ": ("OK",), "TR": ("TK", "PC"), "GR": ("A3",),
    "RO": ("RO",), "BG": ("FB",), "RS": ("JU",), "HR": ("OU",), "LV": ("BT",),
    "IS": ("FI",), "RU": ("SU", "S7"), "UA": ("PS",), "HU": ("W6",),
    "AE": ("EK", "EY", "FZ", "G9"), "QA": ("QR",), "BH": ("GF",), "OM": ("WY",),
    "SA": ("SV",), "JO": ("RJ",), "IL": ("LY",), "LB": ("ME",), "KW": ("KU",), "EG": ("MS",),
    "MA": ("AT",), "DZ": ("AH",), "TN": ("TU",), "ET": ("ET",), "KE": ("KQ",),
    "ZA": ("SA", "FA"), "RW": ("WB",), "NG": ("P4",),
    "US": ("AA", "DL", "UA", "WN", "B6", "AS"), "CA": ("AC", "WS"), "MX": ("AM", "Y4"),
    "PA": ("CM",), "CO": ("AV",), "PE": ("LA",), "CL": ("LA", "H2"), "BR": ("LA", "G3", "AD"),
    "AR": ("AR",),
    "JP": ("JL", "NH"), "KR": ("KE", "OZ", "7C"), "HK": ("CX", "HX"), "SG": ("SQ", "TR"),
    "TH": ("TG", "FD"), "MY": ("MH", "AK"), "ID": ("GA", "QZ"), "PH": ("PR", "5J"),
    "VN": ("VN", "VJ"), "TW": ("BR", "CI"), "CN": ("CA", "MU", "CZ", "HU"),
    "IN": ("AI", "6E", "UK"), "LK": ("UL",), "PK": ("PK",), "BD": ("BG",), "KZ": ("KC",),
    "UZ": ("HY",), "AZ": ("J2",), "AU": ("QF", "VA", "JQ"), "NZ": ("NZ",), "FJ": ("FJ",),
}  # fmt: skip

# Low-cost airlines flying short routes within a region.
REGIONAL_LOW_COST: dict[str, tuple[str, ...]] = {
    "europe": ("FR", "U2", "W6"),
    "north_america": ("WN", "B6", "NK", "F9"),
    "latin_america": ("LA", "AV", "CM"),
    "middle_east": ("FZ", "G9"),
    "africa": ("ET", "KQ"),
    "south_asia": ("6E",),
    "east_asia": ("MM", "7C", "GK"),
    "southeast_asia": ("AK", "FD", "VJ", "5J", "TR"),
    "oceania": ("JQ", "VA"),
}

LOW_COST = codes(
    "FR U2 W6 VY EW HV LS PC DY FZ G9 WN B6 NK F9 Y4 G3 AD H2 TR FD AK QZ 5J VJ 6E JQ MM GK 7C FA"
)

_REGION_BY_COUNTRY: dict[str, str] = {
    "TR": "europe", "RU": "europe", "CY": "europe", "IL": "middle_east", "EG": "africa",
    "MA": "africa", "DZ": "africa", "TN": "africa", "LY": "africa", "MX": "latin_america",
    "US": "north_america", "CA": "north_america", "GL": "north_america",
    "IN": "south_asia", "PK": "south_asia", "BD": "south_asia", "LK": "south_asia",
    "NP": "south_asia", "MV": "south_asia", "KZ": "south_asia", "UZ": "south_asia",
    "AF": "south_asia",
    "JP": "east_asia", "KR": "east_asia", "CN": "east_asia", "TW": "east_asia",
    "HK": "east_asia", "MO": "east_asia", "MN": "east_asia",
    "AU": "oceania", "NZ": "oceania", "FJ": "oceania", "PG": "oceania", "NC": "oceania",
    "PF": "oceania",
}  # fmt: skip


def region_of(country: str, lat: float, lon: float) -> str:
    """A coarse world region, from the country where known, else from coordinates."""
    known = _REGION_BY_COUNTRY.get(country)
    if known:
        return known
    if lon < -30:
        return "north_america" if lat > 24 else "latin_america"
    if lat > 35 and lon < 45:
        return "europe"
    if lat < 35 and lon < 52 and (lon < 32 or lat < 12):
        return "africa"
    if lon < 62:
        return "middle_east"
    if lon < 92:
        return "south_asia"
    if lat < -10 or lon > 160:
        return "oceania"
    if lat < 23 and lon < 130:
        return "southeast_asia"
    return "east_asia"


def airline_name(code: str) -> str:
    """Display name of an airline; the code itself when we do not know it."""
    return AIRLINE_NAMES.get(code.upper(), code.upper())
