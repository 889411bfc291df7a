namespace DiffusersSharp.Schedulers;

/// <summary>
/// <c>scipy.integrate.quad</c> (QUADPACK <c>dqagse</c>, epsabs 1.49e-8) as far as LMS needs it: the first 21-point
/// Gauss-Kronrod pass with scipy's summation order and its stopping test. LMS integrands are polynomials of degree
/// &lt;= 3 evaluated in float32, which that pass integrates to rounding level, so quad returns after it. Should the test
/// ever fail, scipy would bisect further; <see cref="Integrate"/> then still returns the first pass (exact for the
/// polynomial up to the float32 evaluation noise) and says so.
/// </summary>
internal static class Quadpack
{
    private static readonly double[] Wg =
    {
        0.066671344308688137593568809893332, 0.149451349150580593145776339657697, 0.219086362515982043995534934228163,
        0.269266719309996355091226921569469, 0.295524224714752870173892994651338,
    };

    private static readonly double[] Xgk =
    {
        0.995657163025808080735527280689003, 0.973906528517171720077964012084452, 0.930157491355708226001207180059508,
        0.865063366688984510732096688423493, 0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
        0.562757134668604683339000099272694, 0.433395394129247190799265943165784, 0.294392862701460198131126603103866,
        0.148874338981631210884826001129720, 0.0,
    };

    private static readonly double[] Wgk =
    {
        0.011694638867371874278064396062192, 0.032558162307964727478818972459390, 0.054755896574351996031381300244580,
        0.075039674810919952767043140916190, 0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
        0.123491976262065851077958109831074, 0.134709217311473325928054001771707, 0.142775938577060080797094273138717,
        0.147739104901338491374841515972068, 0.149445554002916905664936468389821,
    };

    /// <summary>quad(f, a, b, epsrel): the first Gauss-Kronrod pass, and whether quad stops there.</summary>
    public static double Integrate(Func<double, double> f, double a, double b, double epsrel, out bool stopsAfterFirstPass, double epsabs = 1.49e-8)
    {
        double result = Qk21(f, a, b, out double abserr, out double resabs);
        double errbnd = Math.Max(epsabs, epsrel * Math.Abs(result));
        const double epmach = 2.220446049250313e-16;
        bool roundoff = abserr <= 100 * epmach * resabs && abserr > errbnd;
        stopsAfterFirstPass = roundoff || (abserr <= errbnd && abserr != resabs) || abserr == 0;
        return result;
    }

    private static double Qk21(Func<double, double> f, double a, double b, out double abserr, out double resabs)
    {
        const double epmach = 2.220446049250313e-16;
        const double uflow = 2.2250738585072014e-308;
        var fv1 = new double[10];
        var fv2 = new double[10];
        double centr = 0.5 * (a + b);
        double hlgth = 0.5 * (b - a);
        double dhlgth = Math.Abs(hlgth);
        double fc = f(centr);
        double resg = 0.0;
        double resk = Wgk[10] * fc;
        resabs = Math.Abs(resk);
        for (int j = 0; j < 5; j++)
        {
            int jtw = 2 * j + 1;
            double absc = hlgth * Xgk[jtw];
            double fval1 = f(centr - absc), fval2 = f(centr + absc);
            fv1[jtw] = fval1; fv2[jtw] = fval2;
            double fsum = fval1 + fval2;
            resg = resg + Wg[j] * fsum;
            resk = resk + Wgk[jtw] * fsum;
            resabs = resabs + Wgk[jtw] * (Math.Abs(fval1) + Math.Abs(fval2));
        }
        for (int j = 0; j < 5; j++)
        {
            int jtwm1 = 2 * j;
            double absc = hlgth * Xgk[jtwm1];
            double fval1 = f(centr - absc), fval2 = f(centr + absc);
            fv1[jtwm1] = fval1; fv2[jtwm1] = fval2;
            double fsum = fval1 + fval2;
            resk = resk + Wgk[jtwm1] * fsum;
            resabs = resabs + Wgk[jtwm1] * (Math.Abs(fval1) + Math.Abs(fval2));
        }
        double reskh = resk * 0.5;
        double resasc = Wgk[10] * Math.Abs(fc - reskh);
        for (int j = 0; j < 10; j++) resasc = resasc + Wgk[j] * (Math.Abs(fv1[j] - reskh) + Math.Abs(fv2[j] - reskh));
        double result = resk * hlgth;
        resabs = resabs * dhlgth;
        resasc = resasc * dhlgth;
        abserr = Math.Abs((resk - resg) * hlgth);
        if (resasc != 0.0 && abserr != 0.0) abserr = resasc * Math.Min(1.0, Math.Pow(200.0 * abserr / resasc, 1.5));
        if (resabs > uflow / (50.0 * epmach)) abserr = Math.Max(epmach * 50.0 * resabs, abserr);
        return result;
    }
}
