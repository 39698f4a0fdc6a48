"""RFC 4475 torture-test messages, converted from the RFC's notation to bytes.

Conventions of RFC 4475 section 2 applied by hand: every line ends in CRLF;
<allOneLine> blocks are joined; <hex>..</hex> became the escaped octets.
Shared by the tests and by bench/sip_parser.py (it is not a test module).
"""

from __future__ import annotations

# 3.1.1.1 A Short Tortuous INVITE
WSINV = (
    b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n"
    b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
    b"  ;\r\n"
    b"  tag = 98asjd8\r\n"
    b"MaX-fOrWaRdS: 0068\r\n"
    b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
    b"Content-Length   : 150\r\n"
    b"cseq: 0009\r\n"
    b"  INVITE\r\n"
    b"Via  : SIP  /   2.0\r\n"
    b" /UDP\r\n"
    b"    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\n"
    b"NewFangledHeader:   newfangled value\r\n"
    b" continued newfangled value\r\n"
    b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Route:\r\n"
    b" <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
    b"  branch  =   z9hG4bK9ikj8  ,\r\n"
    b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
    b" z9hG4bK30239\r\n"
    b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
    b"      newvalue ;\r\n"
    b"  secondparam ; q = 0.33\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.1.2 Wide Range of Valid Characters
INTMETH = (
    b"!interesting-Method0123456789_*+`.%indeed'~ "
    b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    b":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n"
    b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
    b"<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n"
    b"From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>"
    b";fromParam''~+*_!.-%="
    b'"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9"'
    b";tag=_token~1'+`*%!-.\r\n"
    b"Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n"
    b"CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n"
    b"Max-Forwards: 255\r\n"
    b"extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

_SDP_192_0_2_1 = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.1.3 Valid Use of the % Escaping Mechanism
ESC01 = (
    b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n"
    b"To: sip:%75se%72@example.com\r\n"
    b"From: <sip:I%20have%20spaces@example.net>;tag=938\r\n"
    b"Max-Forwards: 87\r\n"
    b"i: esc01.239409asdfakjkn23onasd0-3234\r\n"
    b"CSeq: 234234 INVITE\r\n"
    b"Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\r\n"
    b"C: application/sdp\r\n"
    b"Contact:\r\n"
    b"  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\r\n"
    b"Content-Length: 150\r\n"
    b"\r\n" + _SDP_192_0_2_1
)

# 3.1.1.4 Escaped Nulls in URIs
ESCNULL = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"To: sip:null-%00-null@example.com\r\n"
    b"From: sip:null-%00-null@example.com;tag=839923423\r\n"
    b"Max-Forwards: 70\r\n"
    b"Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\r\n"
    b"CSeq: 14398234 REGISTER\r\n"
    b"Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\r\n"
    b"Contact: <sip:%00@host5.example.com>\r\n"
    b"Contact: <sip:%00%00@host5.example.com>\r\n"
    b"L:0\r\n"
    b"\r\n"
)

# 3.1.1.5 Use of % When It Is Not an Escape
ESC02 = (
    b"RE%47IST%45R sip:registrar.example.com SIP/2.0\r\n"
    b'To: "%Z%45" <sip:resource@example.com>\r\n'
    b'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23\r\n'
    b"Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\r\n"
    b"Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\r\n"
    b"CSeq: 29344 RE%47IST%45R\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alias1@host1.example.com>\r\n"
    b"C%6Fntact: <sip:alias2@host2.example.com>\r\n"
    b"Contact: <sip:alias3@host3.example.com>\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.1.6 Message with No LWS between Display Name and <
LWSDISP = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: caller<sip:caller@example.com>;tag=323\r\n"
    b"Max-Forwards: 70\r\n"
    b"Call-ID: lwsdisp.1234abcd@funky.example.com\r\n"
    b"CSeq: 60 OPTIONS\r\n"
    b"Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.1.7 Long Values in Header Fields
_LONG = b"long" * 20
LONGREQ = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b'To: "I have a user name of ' + b"extreme" * 10 + b' proportion"'
    b"<sip:user@example.com:6000;unknownparam1=very" + _LONG + b"value;"
    b"longparam" + b"name" * 25 + b"=shortvalue;very" + _LONG + b"long"
    b"ParameterNameWithNoValue>\r\n"
    b"F: sip:"
    + b"amazinglylongcallername" * 5
    + b"@example.net;tag=12"
    + b"982" * 50
    + b"424;unknownheaderparam"
    + b"name" * 20
    + b"=unknowheaderparam"
    + b"value" * 15
    + b";unknownValueless"
    + b"paramname" * 10
    + b"\r\n"
    b"Call-ID: longreq.one" + b"really" * 20 + b"longcallid\r\n"
    b"CSeq: 3882340 INVITE\r\n"
    b"Unknown-" + b"Long" * 20 + b"-Name: unknown-" + _LONG + b"-value; "
    b"unknown-"
    + _LONG
    + b"-parameter-name = unknown-"
    + _LONG
    + b"-parameter-value\r\n"
    b"Via: SIP/2.0/TCP sip33.example.com\r\n"
    b"v: SIP/2.0/TCP sip32.example.com\r\n"
    b"V: SIP/2.0/TCP sip31.example.com\r\n"
    b"Via: SIP/2.0/TCP sip30.example.com\r\n"
    b"ViA: SIP/2.0/TCP sip29.example.com\r\n"
    b"VIa: SIP/2.0/TCP sip28.example.com\r\n"
    b"VIA: SIP/2.0/TCP sip27.example.com\r\n"
    b"via: SIP/2.0/TCP sip26.example.com\r\n"
    b"viA: SIP/2.0/TCP sip25.example.com\r\n"
    b"vIa: SIP/2.0/TCP sip24.example.com\r\n"
    b"vIA: SIP/2.0/TCP sip23.example.com\r\n"
    b"V :  SIP/2.0/TCP sip22.example.com\r\n"
    b"v :  SIP/2.0/TCP sip21.example.com\r\n"
    b"V  : SIP/2.0/TCP sip20.example.com\r\n"
    b"v  : SIP/2.0/TCP sip19.example.com\r\n"
    b"Via : SIP/2.0/TCP sip18.example.com\r\n"
    b"Via  : SIP/2.0/TCP sip17.example.com\r\n"
    + b"".join(b"Via: SIP/2.0/TCP sip%d.example.com\r\n" % n for n in range(16, 0, -1))
    + b"Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very"
    + b"long" * 50
    + b"branchvalue\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:" + b"amazinglylongcallername" * 5 + b"@host5.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 150\r\n"
    b"\r\n" + _SDP_192_0_2_1
)

# 3.1.1.8 Extra Trailing Octets in a UDP Datagram
DBLREQ = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:j.user@example.com;tag=43251j3j324\r\n"
    b"Max-Forwards: 8\r\n"
    b"I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\r\n"
    b"Contact: sip:j.user@host.example.com\r\n"
    b"CSeq: 8 REGISTER\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
    b"INVITE sip:joe@example.com SIP/2.0\r\n"
    b"t: sip:joe@example.com\r\n"
    b"From: sip:caller@example.net;tag=141334\r\n"
    b"Max-Forwards: 8\r\n"
    b"Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 150\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.15\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.15\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m =video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.1.9 Semicolon-Separated Parameters in URI User Part
SEMIURI = (
    b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\r\n"
    b"To: sip:j_user@example.com\r\n"
    b"From: sip:caller@example.org;tag=33242\r\n"
    b"Max-Forwards: 3\r\n"
    b"Call-ID: semiuri.0ha0isndaksdj\r\n"
    b"CSeq: 8 OPTIONS\r\n"
    b"Accept: application/sdp, application/pkcs7-mime,\r\n"
    b"        multipart/mixed, multipart/signed,\r\n"
    b"        message/sip, message/sipfrag\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.1.10 Varied and Unknown Transport Types
TRANSPORTS = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: <sip:caller@example.com>;tag=323\r\n"
    b"Max-Forwards: 70\r\n"
    b"Call-ID:  transports.kijh4akdnaqjkwendsasfdj\r\n"
    b"Accept: application/sdp\r\n"
    b"CSeq: 60 OPTIONS\r\n"
    b"Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\r\n"
    b"Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\r\n"
    b"Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\r\n"
    b"Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\r\n"
    b"Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.1.11 Multipart MIME Message (binary part given in <hex> in the RFC)
_MPART_BINARY = bytes.fromhex(
    "3082015206092A86"
    "4886F70D010702A08201433082013F02"
    "01013109300706052B0E03021A300B06"
    "092A864886F70D010701318201203082"
    "011C020101307C3070310B3009060355"
    "04061302555331133011060355040813"
    "0A43616C69666F726E69613111300F06"
    "03550407130853616E204A6F7365310E"
    "300C060355040A130573697069743129"
    "3027060355040B132053697069742054"
    "6573742043657274696669636174652"
    "0417574686F7269747902080195007102"
    "330113300706052B0E03021A300D0609"
    "2A864886F70D01010105000481808EF4"
    "66F948F0522DD2E5978E9D95AAE9F2FE"
    "15A0665971629 2E8DA2AA8D8350A68CE".replace(" ", "")
    + "FFAE3CBD2BFF1675DDD5648E593DD647"
    "28F26220F7E941749E330D9A15EDABDB"
    "93D10C42102E7B7289D29CC0C9AE2EFB"
    "C7C0CFF9172F3B027E4FC027E1546DE4"
    "B6AA3ABB3E66CCCB5DD6C64B8383149C"
    "B8E6FF182D944FE57B65BC99D005"
)
MPART01 = (
    b"MESSAGE sip:kumiko@example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070"
    b";branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:127.0.0.1:5080>\r\n"
    b"Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8Ue"
    b"XqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/Xlg"
    b"KeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=\r\n"
    b"Contact: <sip:fluffy@127.0.0.1:5070>\r\n"
    b"To: <sip:kumiko@example.org>\r\n"
    b"From: <sip:fluffy@example.com>;tag=2fb0dcc9\r\n"
    b"Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\r\n"
    b"Date: Sat, 15 Oct 2005 04:44:56 GMT\r\n"
    b"User-Agent: SIPimp.org/0.2.5 (curses)\r\n"
    b"Content-Length: 553\r\n"
    b"\r\n"
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n" + _MPART_BINARY + b"\r\n"
    b"--7a9cbec02ceef655--\r\n"
)

_SDP_198 = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.198\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.198\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.1.12 Unusual Reason Phrase
UNREASON = (
    "SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое\r\n".encode()
    + b"Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\r\n"
    b"Call-ID: unreason.1234ksdfak3j2erwedfsASdf\r\n"
    b"CSeq: 35 INVITE\r\n"
    b"From: sip:user@example.com;tag=11141343\r\n"
    b"To: sip:user@example.edu;tag=2229\r\n"
    b"Content-Length: 154\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Contact: <sip:user@host198.example.com>\r\n"
    b"\r\n" + _SDP_198
)

# 3.1.1.13 Empty Reason Phrase
NOREASON = (
    b"SIP/2.0 100 \r\n"
    b"Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\r\n"
    b"Call-ID: noreason.asndj203insdf99223ndf\r\n"
    b"CSeq: 35 INVITE\r\n"
    b"From: <sip:user@example.com>;tag=39ansfi3\r\n"
    b"To: <sip:user@example.edu>;tag=902jndnke3\r\n"
    b"Content-Length: 0\r\n"
    b"Contact: <sip:user@host105.example.com>\r\n"
    b"\r\n"
)

_SDP_15 = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.15\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.15\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.2.1 Extraneous Header Field Separators
BADINV01 = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:caller@example.net;tag=134161461246\r\n"
    b"Max-Forwards: 7\r\n"
    b"Call-ID: badinv01.0ha0isndaksdjasdf3234nas\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n"
    b'Contact: "Joe" <sip:joe@example.org>;;;;\r\n'
    b"Content-Length: 152\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n" + _SDP_15
)

# 3.1.2.2 Content Length Larger Than Message
CLERR = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"Max-Forwards: 80\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:caller@example.net;tag=93942939o2\r\n"
    b"Contact: <sip:caller@hungry.example.net>\r\n"
    b"Call-ID: clerr.0ha0isndaksdjweiafasdk3\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 9999\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.155\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.155\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.2.3 Negative Content-Length
NCL = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"Max-Forwards: 254\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:caller@example.net;tag=32394234\r\n"
    b"Call-ID: ncl.0ha0isndaksdj2193423r542w35\r\n"
    b"CSeq: 0 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\r\n"
    b"Contact: <sip:caller@example53.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: -999\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.53\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.53\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.2.4 Request Scalar Fields with Overlarge Values
SCALAR02 = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\r\n"
    b"To: <sip:user@example.com>\r\n"
    b"From: <sip:user@example.com>;tag=239232jh3\r\n"
    b"CSeq: 36893488147419103232 REGISTER\r\n"
    b"Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\r\n"
    b"Max-Forwards: 300\r\n"
    b"Expires: 1" + b"0" * 104 + b"\r\n"
    b"Contact: <sip:user@host129.example.com>\r\n"
    b"  ;expires=280297596632815\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 3.1.2.5 Response Scalar Fields with Overlarge Values
SCALARLG = (
    b"SIP/2.0 503 Service Unavailable\r\n"
    b"Via: SIP/2.0/TCP host129.example.com"
    b";branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\r\n"
    b"To: <sip:user@example.com>\r\n"
    b"From: <sip:other@example.net>;tag=2easdjfejw\r\n"
    b"CSeq: 9292394834772304023312 OPTIONS\r\n"
    b"Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\r\n"
    b"Retry-After: 949302838503028349304023988\r\n"
    b'Warning: 1812 overture "In Progress"\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 3.1.2.6 Unterminated Quoted String in Display Name
QUOTBAL = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b'To: "Mr. J. User <sip:j.user@example.com>\r\n'
    b"From: sip:caller@example.net;tag=93334\r\n"
    b"Max-Forwards: 10\r\n"
    b"Call-ID: quotbal.aksdj\r\n"
    b"Contact: <sip:caller@host59.example.net>\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 152\r\n"
    b"\r\n" + _SDP_15
)

_SDP_T = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.5\r\n"
    b"t=3149328700 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.2.7 <> Enclosing Request-URI
LTGTRURI = (
    b"INVITE <sip:user@example.com> SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=39291\r\n"
    b"Max-Forwards: 23\r\n"
    b"Call-ID: ltgtruri.1@192.0.2.5\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5\r\n"
    b"Contact: <sip:caller@host5.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 159\r\n"
    b"\r\n" + _SDP_T
)

# 3.1.2.8 Malformed SIP Request-URI (embedded LWS)
LWSRURI = (
    b"INVITE sip:user@example.com; lr SIP/2.0\r\n"
    b"To: sip:user@example.com;tag=3xfe-9921883-z9f\r\n"
    b"From: sip:caller@example.net;tag=231413434\r\n"
    b"Max-Forwards: 5\r\n"
    b"Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\r\n"
    b"CSeq: 2130706432 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\r\n"
    b"Contact: <sip:caller@host1.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 159\r\n"
    b"\r\n" + _SDP_T.replace(b"192.0.2.5", b"192.0.2.1")
)

# 3.1.2.9 Multiple SP Separating Request-Line Elements
LWSSTART = (
    b"INVITE  sip:user@example.com  SIP/2.0\r\n"
    b"Max-Forwards: 8\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=8814\r\n"
    b"Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\r\n"
    b"CSeq: 1893884 INVITE\r\n"
    b"Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\r\n"
    b"Contact: <sip:caller@host1.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 150\r\n"
    b"\r\n" + _SDP_192_0_2_1
)

# 3.1.2.10 SP Characters at End of Request-Line
TRWS = (
    b"OPTIONS sip:remote-target@example.com SIP/2.0  \r\n"
    b"Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093\r\n"
    b"To: <sip:remote-target@example.com>\r\n"
    b"From: <sip:local-resource@example.com>;tag=329429089\r\n"
    b"Call-ID: trws.oicu34958239neffasdhr2345r\r\n"
    b"Accept: application/sdp\r\n"
    b"CSeq: 238923 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 3.1.2.11 Escaped Headers in SIP Request-URI
ESCRURI = (
    b"INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=341518\r\n"
    b"Max-Forwards: 7\r\n"
    b"Contact: <sip:caller@host39923.example.net>\r\n"
    b"Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5\r\n"
    b"CSeq: 149209342 INVITE\r\n"
    b"Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 150\r\n"
    b"\r\n" + _SDP_192_0_2_1
)

# 3.1.2.12 Invalid Time Zone in Date Header Field
BADDATE = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=2234923\r\n"
    b"Max-Forwards: 70\r\n"
    b"Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234\r\n"
    b"CSeq: 1392934 INVITE\r\n"
    b"Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n"
    b"Date: Fri, 01 Jan 2010 16:00:00 EST\r\n"
    b"Contact: <sip:caller@host5.example.net>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 150\r\n"
    b"\r\n" + _SDP_192_0_2_1.replace(b"192.0.2.1", b"192.0.2.5")
)

# 3.1.2.13 Failure to Enclose name-addr URI in <>
REGBADCT = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:user@example.com;tag=998332\r\n"
    b"Max-Forwards: 70\r\n"
    b"Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\r\n"
    b"Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.2.14 Spaces within addr-spec
BADASPEC = (
    b"OPTIONS sip:user@example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423\r\n'
    b'To: "Watson, Thomas" < sip:t.watson@example.org >\r\n'
    b"Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\r\n"
    b"Accept: application/sdp\r\n"
    b"CSeq: 3923239 OPTIONS\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.2.15 Non-token Characters in Display Name
BADDN = (
    b"OPTIONS sip:t.watson@example.org SIP/2.0\r\n"
    b"Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\r\n"
    b"Max-Forwards:      70\r\n"
    b"From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43\r\n"
    b"To:      Watson, Thomas <sip:t.watson@example.org>\r\n"
    b"Call-ID: baddn.31415@c.example.com\r\n"
    b"Accept: application/sdp\r\n"
    b"CSeq:    3923239 OPTIONS\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.2.16 Unknown Protocol Version
BADVERS = (
    b"OPTIONS sip:t.watson@example.org SIP/7.0\r\n"
    b"Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n"
    b"Max-Forwards:     70\r\n"
    b"From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\r\n"
    b"To:      T. Watson <sip:t.watson@example.org>\r\n"
    b"Call-ID: badvers.31417@c.example.com\r\n"
    b"CSeq:    1 OPTIONS\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.2.17 Start Line and CSeq Method Mismatch
MISMATCH01 = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:caller@example.net;tag=34525\r\n"
    b"Max-Forwards: 6\r\n"
    b"Call-ID: mismatch01.dj0234sxdfl3\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# 3.1.2.18 Unknown Method with CSeq Method Mismatch
MISMATCH02 = (
    b"NEWMETHOD sip:user@example.com SIP/2.0\r\n"
    b"To: sip:j.user@example.com\r\n"
    b"From: sip:caller@example.net;tag=34525\r\n"
    b"Max-Forwards: 6\r\n"
    b"Call-ID: mismatch02.dj0234sxdfl3\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Contact: <sip:caller@host.example.net>\r\n"
    b"Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 138\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.1\r\n"
    b"c=IN IP4 192.0.2.1\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)

# 3.1.2.19 Overlarge Response Code
BIGCODE = (
    b"SIP/2.0 4294967301 better not break the receiver\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\r\n"
    b"Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\r\n"
    b"CSeq: 353494 INVITE\r\n"
    b"From: <sip:user@example.com>;tag=39ansfi3\r\n"
    b"To: <sip:user@example.edu>;tag=902jndnke3\r\n"
    b"Content-Length: 0\r\n"
    b"Contact: <sip:user@host105.example.com>\r\n"
    b"\r\n"
)

_SDP_95 = _SDP_15.replace(b"192.0.2.15", b"192.0.2.95")

# 3.3.1 Missing Required Header Fields
INSUF = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"CSeq: 193942 INVITE\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 152\r\n"
    b"\r\n" + _SDP_95
)

# 3.3.2 Request-URI with Unknown Scheme
UNKSCM = (
    b"OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=384\r\n"
    b"Max-Forwards: 3\r\n"
    b"Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34\r\n"
    b"CSeq: 3923423 OPTIONS\r\n"
    b"Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 3.3.8 Multiple Values in Single Value Required Fields
MULTI01 = (
    b"INVITE sip:user@company.com SIP/2.0\r\n"
    b"Contact: <sip:caller@host25.example.net>\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\r\n"
    b"Max-Forwards: 70\r\n"
    b"CSeq: 5 INVITE\r\n"
    b"Call-ID: multi01.98asdh@192.0.2.1\r\n"
    b"CSeq: 59 INVITE\r\n"
    b"Call-ID: multi01.98asdh@192.0.2.2\r\n"
    b"From: sip:caller@example.com;tag=3413415\r\n"
    b"To: sip:user@example.com\r\n"
    b"To: sip:other@example.net\r\n"
    b"From: sip:caller@example.net;tag=2923420123\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 154\r\n"
    b"Contact: <sip:caller@host36.example.net>\r\n"
    b"Max-Forwards: 5\r\n"
    b"\r\n" + _SDP_15.replace(b"192.0.2.15", b"192.0.2.25") + b"\r\n"
)

# 3.3.9 Multiple Content-Length Values
MCL01 = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:other@example.net;tag=3923942\r\n"
    b"Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\r\n"
    b"CSeq: 15932 OPTIONS\r\n"
    b"Content-Length: 13\r\n"
    b"Max-Forwards: 60\r\n"
    b"Content-Length: 5\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"There's no way to know how many octets are supposed to be here.\r\n"
    b"\r\n"
)

# 3.3.10 200 OK Response with Broadcast Via Header Field Value
BCAST = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\r\n"
    b"Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\r\n"
    b"Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\r\n"
    b"CSeq: 35 INVITE\r\n"
    b"From: sip:user@example.com;tag=11141343\r\n"
    b"To: sip:user@example.edu;tag=2229\r\n"
    b"Content-Length: 154\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Contact: <sip:user@host28.example.com>\r\n"
    b"\r\n" + _SDP_198
)

# 3.3.11 Max-Forwards of Zero
ZEROMF = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:caller@example.net;tag=3ghsd41\r\n"
    b"Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas\r\n"
    b"CSeq: 39234321 OPTIONS\r\n"
    b"Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i\r\n"
    b"Max-Forwards: 0\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

VALID = {
    "wsinv": WSINV,
    "intmeth": INTMETH,
    "esc01": ESC01,
    "escnull": ESCNULL,
    "esc02": ESC02,
    "lwsdisp": LWSDISP,
    "longreq": LONGREQ,
    "dblreq": DBLREQ,
    "semiuri": SEMIURI,
    "transports": TRANSPORTS,
    "mpart01": MPART01,
    "unreason": UNREASON,
    "noreason": NOREASON,
    "unkscm": UNKSCM,
    "zeromf": ZEROMF,
    "bcast": BCAST,
}

# Messages a receiver must refuse (400, 505 or drop for responses).
INVALID = {
    "badinv01": BADINV01,
    "clerr": CLERR,
    "ncl": NCL,
    "scalar02": SCALAR02,
    "scalarlg": SCALARLG,
    "quotbal": QUOTBAL,
    "ltgtruri": LTGTRURI,
    "lwsruri": LWSRURI,
    "lwsstart": LWSSTART,
    "trws": TRWS,
    "escruri": ESCRURI,
    "baddate": BADDATE,
    "regbadct": REGBADCT,
    "badaspec": BADASPEC,
    "baddn": BADDN,
    "badvers": BADVERS,
    "mismatch01": MISMATCH01,
    "mismatch02": MISMATCH02,
    "bigcode": BIGCODE,
    "insuf": INSUF,
    "multi01": MULTI01,
    "mcl01": MCL01,
}
